"""What an evaluation reports: top-1/top-5 with a bootstrap 95 % interval over evaluation images, and, over several
runs (``--seeds``, low-shot ``--episodes``), the mean, standard deviation, each run, and both intervals named apart.

The two intervals answer different questions (`evaluation.intervals`): the one over images (``*_interval``) says how
far the figure could move with another draw of as many evaluation images; the one over runs (``*_seed_interval``,
``*_episode_interval``) how far the mean could move with other seeds or other low-shot draws, on these images. With
several runs, the interval over images is that of the mean over runs: each image's hits averaged over the runs,
resampled together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..evaluation.intervals import CONFIDENCE, DEFAULT_RESAMPLES, bootstrap_interval, spread
from .reporting import TOP_K

EVAL_FIGURES = ("eval_accuracy", f"eval_top{TOP_K}_accuracy")
# a multi-label probe's evaluation figures (`engine.evaluate_multi_label`): no per-image hits, so no interval over images
MULTI_LABEL_EVAL_FIGURES = ("eval_map", "eval_micro_map", "eval_f1_micro", "eval_f1_macro")


@dataclass(frozen=True)
class BootstrapOptions:
    """The bootstrap of the evaluation figures: ``resamples`` draws of the evaluation images, seeded by ``seed`` (the
    same predictions and seed give the same interval)."""

    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    unit: str = "images"  # what an evaluation row is: images, or videos (their clips' logits averaged)

    def __post_init__(self):
        if self.resamples < 1:
            raise ValueError(f"--bootstrap_resamples must be at least 1 (1000 is usual); got {self.resamples}.")


def per_image_hits(ranked: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per evaluation image, whether its first prediction is right and whether its class is among the first
    ``TOP_K`` (``ranked``: ``[N, k]`` class indices, best first), as the package's top-k metric counts them."""
    ranked, labels = np.asarray(ranked)[:, :TOP_K], np.asarray(labels)
    return {
        "eval_accuracy": (ranked[:, 0] == labels).astype(np.float64),
        f"eval_top{TOP_K}_accuracy": (ranked == labels[:, None]).any(axis=1).astype(np.float64),
    }


def image_intervals(hits: dict[str, np.ndarray], options: BootstrapOptions) -> dict:
    """``<figure>_interval`` (``[low, high]``) of each evaluation figure, and how they were computed."""
    intervals = {
        name: bootstrap_interval(hits[name], resamples=options.resamples, seed=options.seed, unit=options.unit)
        for name in hits
    }
    first = next(iter(intervals.values()))
    return {
        **{f"{name}_interval": [interval.low, interval.high] for name, interval in intervals.items()},
        "interval_method": f"{first.confidence:.0%} {first.method}",
    }


def spread_figures(
    runs: Sequence[int],
    per_run: Sequence[dict],
    hits: Sequence[dict] | None,
    options: BootstrapOptions,
    over: str = "seeds",
) -> dict:
    """The figures of one setting trained under several ``runs`` (seeds or episodes, named by ``over``): per
    evaluation figure its mean (the figure), ``_std`` (sample standard deviation), ``_<run>_interval`` (Student-t
    interval of the mean over runs) and ``_interval`` (bootstrap over images of the mean over runs); ``per_<run>``
    keeps each run's own figures, intervals over images included. ``hits`` ``None``: multi-label runs, whose
    figures are `MULTI_LABEL_EVAL_FIGURES` and have no interval over images."""
    run = over.removesuffix("s")
    names = EVAL_FIGURES if hits is not None else MULTI_LABEL_EVAL_FIGURES
    figures: dict = {}
    for name in names:
        summary = spread([result[name] for result in per_run], CONFIDENCE, over)
        figures.update(
            {name: summary["mean"], f"{name}_std": summary["std"], f"{name}_{run}_interval": summary["interval"]}
        )
    figures[f"{run}_interval_method"] = (
        f"{CONFIDENCE:.0%} Student-t interval of the mean over {len(runs)} {over} (their spread, on these images)"
    )
    if hits is not None:
        mean_hits = {name: np.mean([h[name] for h in hits], axis=0) for name in EVAL_FIGURES}
        figures.update(image_intervals(mean_hits, options))
        figures["interval_method"] = (
            f"{figures['interval_method']}; each image's hits averaged over the {len(runs)} {over} (the evaluation "
            "images' variation)"
        )
    figures[over] = list(runs)
    figures[f"per_{run}"] = {str(key): result for key, result in zip(runs, per_run, strict=True)}
    return figures
