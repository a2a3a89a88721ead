"""Error bars: a bootstrap confidence interval over evaluation images, and the mean, spread and interval over runs.

Two probes 0.8 points apart on 500 evaluation images are within noise (the binomial standard error at 80 % is 1.8
points). :func:`bootstrap_interval` says how far a figure could move with other draws of the same number of images
from the same distribution (the percentile bootstrap, seeded: the same per-image results and seed give the same
interval); :func:`spread` summarises several runs (seeds, low-shot episodes): mean, sample standard deviation and a
t-interval of the mean. The two answer different questions and are reported apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

DEFAULT_RESAMPLES = 1000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A figure with its interval: ``low <= value <= high`` at ``confidence``, and how it was computed."""

    value: float
    low: float
    high: float
    confidence: float
    method: str

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_interval(
    per_image: np.ndarray,
    statistic: Callable[[np.ndarray], float] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
    unit: str = "images",
) -> Interval:
    """The percentile bootstrap interval of ``statistic`` (default: the mean, i.e. the accuracy of 0/1 hits) over
    ``per_image`` results: ``resamples`` draws of as many images with replacement, seeded by ``seed``.

    ``per_image`` is ``[N]`` (a hit per image) or ``[N, ...]`` (rows a statistic such as mAP reads: scores and labels
    side by side); rows are resampled together. ``unit`` names the rows in the method's words (images, videos)."""
    per_image = np.asarray(per_image)
    if len(per_image) == 0:
        raise ValueError("A bootstrap interval needs at least one evaluation image.")
    statistic = statistic or (lambda rows: float(np.mean(rows)))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(per_image), size=(resamples, len(per_image)))
    values = np.array([statistic(per_image[draw]) for draw in draws])
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    method = f"percentile bootstrap over {len(per_image)} evaluation {unit}, {resamples} resamples, seed {seed}"
    return Interval(float(statistic(per_image)), float(low), float(high), confidence, method)


def spread(values: Sequence[float], confidence: float = CONFIDENCE, over: str = "seeds") -> dict:
    """Mean, sample standard deviation and the t-interval of the mean of one figure over several runs (``over``
    names what varied: seeds, episodes), with every value."""
    values = [float(value) for value in values]
    if not values:
        raise ValueError("A spread needs at least one run.")
    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * std / math.sqrt(len(values))) if std else 0.0
    return {
        "mean": mean,
        "std": std,
        "interval": [mean - half, mean + half],
        "confidence": confidence,
        "over": over,
        "runs": len(values),
        "values": values,
    }
