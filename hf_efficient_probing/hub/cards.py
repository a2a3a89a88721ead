"""Model cards of probe repositories, rendered from ``model_cards/probe.md`` with `huggingface_hub.ModelCard`.

The metadata says what the Hub needs to list and evaluate the probe: ``library_name: hf-efficient-probing`` (not
``transformers``: the Hub's "Use this model" snippet for ``transformers`` would fail without
``import hf_efficient_probing``, which our own snippet has), ``base_model`` (the backbone) with
``base_model_relation: adapter`` (so that the probe appears in the backbone's model tree, and `find_probes` finds it by
the ``base_model:<backbone>`` tag the Hub derives), ``datasets``, ``tags``, ``pipeline_tag``, the backbone's
``license`` when its card states one, and a ``model-index`` with top-1/top-5 (and any further figures of the card).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData, hf_hub_download

from ..analysis.attention_maps import attention_unit, count_attention_maps

LIBRARY_NAME = "hf-efficient-probing"
TEMPLATE = Path(__file__).parent / "model_cards" / "probe.md"
POOLING_DESCRIPTIONS = {
    "ep": "An Efficient Probing (EP) head",
    "linear": "A linear probe",
}


@dataclass
class ProbeCardInfo:
    """What a model card says beyond the probe's config: the evaluation and the training recipe.

    Attributes:
        dataset: Hub id of the data set the probe was trained and evaluated on (e.g. ``"ILSVRC/imagenet-1k"``).
        dataset_name: readable name of the data set (defaults to ``dataset``).
        dataset_config: configuration of the data set, if it has several.
        dataset_split: split the results were measured on.
        top1: top-1 accuracy on that split, in percent.
        top5: top-5 accuracy on that split, in percent.
        best_epoch: the epoch whose results are reported (the paper reports the best one).
        training: the training recipe, e.g. ``{"optimizer": "LARS", "base learning rate": 0.1, "epochs": 90}``.
        license: licence of the probe; by default the backbone's, read from the backbone's model card.
        model_name: name of the model in the card and its ``model-index``; defaults to the repository name.
        tags: extra tags.
        extra_results: further accuracies (percent) on the same data set and split, by metric name, e.g. the best
            epoch of the run a released head was not saved at.
        results_source: ``(name, url)`` of where the results were measured, when not by this library (credited in
            the ``model-index`` and the card).
        notes: paragraphs the card shows under "Notes" (provenance, caveats of the figures).
        metric_suffix: appended to every metric name of the ``model-index`` (a caveat that must travel with the
            figures, e.g. a best epoch selected on the reported split).
        top1_interval, top5_interval: the 95 % interval (percent, ``[low, high]``) of top-1/top-5 over the
            evaluation images (or videos); ``interval_method`` says how it was computed, over what. The ``model-index`` keeps the point
            values; the card's prose and its ``hf_efficient_probing`` metadata carry the intervals.
        runs: with ``--seeds``, what the setting of this probe gave under every seed: ``{"over": "seeds",
            "top1": {seed: percent}, "top1_mean", "top1_std", "top1_interval": [low, high] (Student-t over runs),
            "this_run": the seed of the weights here}``.
    """

    dataset: str | None = None
    dataset_name: str | None = None
    dataset_config: str | None = None
    dataset_split: str = "validation"
    top1: float | None = None
    top5: float | None = None
    best_epoch: int | None = None
    training: dict[str, Any] = field(default_factory=dict)
    license: str | None = None
    model_name: str | None = None
    tags: list[str] = field(default_factory=list)
    extra_results: dict[str, float] = field(default_factory=dict)
    results_source: tuple[str, str] | None = None
    notes: list[str] = field(default_factory=list)
    metric_suffix: str = ""
    top1_interval: list[float] | None = None
    top5_interval: list[float] | None = None
    interval_method: str | None = None
    runs: dict[str, Any] | None = None

    def spread_metadata(self) -> dict | None:
        """The intervals and the spread over runs, as the card's ``hf_efficient_probing`` metadata (`find` reads it)."""
        metadata = {
            "top1_interval": self.top1_interval,
            "top5_interval": self.top5_interval,
            "interval_covers": self.interval_method,
            "runs": self.runs,
        }
        metadata = {key: value for key, value in metadata.items() if value is not None}
        return metadata or None

    def spread_notes(self) -> list[str]:
        """The card's prose on what varies around its figures."""
        notes = []
        if self.top1_interval:
            low, high = self.top1_interval
            notes.append(  # the method names what was resampled (images, or videos)
                f"Top-1 {self.top1} %, 95 % interval {low:.1f} to {high:.1f} "
                + (f"({self.interval_method})." if self.interval_method else "over the evaluation set.")
            )
        if self.runs:
            runs, over = self.runs, self.runs["over"]
            each = ", ".join(f"{key}: {value:.2f}" for key, value in runs["top1"].items())
            low, high = runs["top1_interval"]
            notes.append(
                f"This probe is the one of {over[:-1]} {runs['this_run']}. Its setting trained under {len(runs['top1'])} "
                f"{over} gave top-1 {runs['top1_mean']:.2f} ± {runs['top1_std']:.2f} % (mean ± standard deviation; "
                f"{each}); 95 % interval of the mean over {over}: {low:.1f} to {high:.1f}."
            )
        return notes

    def __post_init__(self):
        if (self.top1 is not None or self.top5 is not None or self.extra_results) and not self.dataset:
            raise ValueError(
                "Results (top1/top5) need the data set they were measured on: set `dataset` to its Hub id."
            )
        for name, value in [("top1", self.top1), ("top5", self.top5), *self.extra_results.items()]:
            if value is not None and not 0 <= value <= 100:
                raise ValueError(f"{name} is a percentage in [0, 100], got {value}.")


def card_info_from_summary(summary: dict, **overrides) -> ProbeCardInfo:
    """Card details from a training run's ``run_summary.json`` (accuracies there are fractions, here percent).

    A default-protocol run records its grid, with the probe it kept per kind under ``chosen``: a run that kept one
    probe (one kind) is described by that probe's figures and learning rate, and the card says when that learning
    rate was at the edge of the grid (a larger or smaller one might do better)."""
    chosen = summary.get("chosen") or {}
    if len(chosen) == 1:
        (probe,) = chosen.values()
        summary = {**summary, **probe, "peak_learning_rate": probe.get("learning_rate")}
    runs = _runs(summary)
    if "per_seed" in summary:  # the figures of the weights in the repository (one seed's); the spread goes in the prose
        summary = {**summary, **summary["per_seed"][str(summary["saved_seed"])]}

    def percent(key):
        value = summary.get(key)
        return None if value is None or value != value else round(100 * value, 2)  # NaN: not measured

    recipe = {
        "optimizer": summary.get("optimizer"),
        "peak learning rate": summary.get("peak_learning_rate"),
        "effective batch size": summary.get("effective_batch_size"),
        "epochs": summary.get("epochs"),
        "seed": summary.get("seed"),
        "protocol": summary.get("protocol"),
        "selection": summary.get("selection"),
        "preprocessing": summary.get("preprocessing"),
    }
    fields = {
        "dataset": summary.get("dataset"),
        "top1": percent("eval_accuracy"),
        "top5": percent("eval_top5_accuracy"),
        "best_epoch": None if summary.get("best_epoch") is None else int(summary["best_epoch"]),
        "training": {name: value for name, value in recipe.items() if value is not None},
        "top1_interval": _percents(summary.get("eval_accuracy_interval")),
        "top5_interval": _percents(summary.get("eval_top5_accuracy_interval")),
        "interval_method": summary.get("interval_method"),
        "runs": runs,
        **_selection_caveat(summary),
    }
    if summary.get("grid_edge"):
        fields["notes"] = [*fields.get("notes", []), summary["grid_edge"]["note"]]
    return ProbeCardInfo(**{**fields, **overrides})


SELECTED_ON_REPORTED_SPLIT = " (best epoch selected on this split)"


def _percents(interval) -> list[float] | None:
    return None if interval is None else [round(100 * value, 2) for value in interval]


def _runs(summary: dict) -> dict | None:
    """A chosen setting's spread over seeds (``--seeds``), in percent, for the card (which gives top-1 figures
    only: none for a multi-label probe's mAP)."""
    if "per_seed" not in summary or "eval_accuracy" not in summary:
        return None
    return {
        "over": "seeds",
        "top1": {seed: round(100 * figures["eval_accuracy"], 2) for seed, figures in summary["per_seed"].items()},
        "top1_mean": round(100 * summary["eval_accuracy"], 2),
        "top1_std": round(100 * summary["eval_accuracy_std"], 2),
        "top1_interval": _percents(summary["eval_accuracy_seed_interval"]),
        "this_run": summary["saved_seed"],
    }


def _selection_caveat(summary: dict) -> dict:
    """A run that chose its epoch on the split it reports (the paper's protocol) says so in the card's prose and in
    the name of every model-index figure, so that the figure never travels without its caveat."""
    if summary.get("protocol") != "paper":
        return {}
    return {
        "metric_suffix": SELECTED_ON_REPORTED_SPLIT,
        "notes": [
            "These figures come from the paper's protocol: the best epoch was selected on the evaluation split itself, "
            "the split they are measured on, so they are optimistic. The default protocol of hf-efficient-probing "
            "selects on data held out from train instead."
        ],
    }


def is_hub_id(name: str | None) -> bool:
    """Whether ``name`` reads as a Hub repository id rather than a local path."""
    return bool(name) and not os.path.exists(name) and name.count("/") <= 1 and not name.startswith((".", "/", "~"))


def backbone_license(
    name_or_path: str | None, revision: str | None = None, token: str | bool | None = None
) -> str | None:
    """The ``license`` of the backbone's model card, or ``None`` when there is no card or it states none."""
    if not name_or_path:
        return None
    try:
        if os.path.isdir(name_or_path):
            readme = Path(name_or_path) / "README.md"
            if not readme.is_file():
                return None
        else:
            readme = hf_hub_download(name_or_path, "README.md", revision=revision, token=token)
        return ModelCard.load(readme, ignore_metadata_errors=True).data.license
    except Exception:  # no card, no network, gated repo: the licence is then left out of the card, not guessed
        return None


def _hyper_parameters(model) -> list[tuple[str, Any]]:
    config = model.config
    rows = [("probe", config.pooling_name)]
    rows += list(config.pooling_kwargs().items())
    rows += [
        ("feature layers", config.feature_layers),
        ("tokens read", config.token_selection),
        ("final norm applied", model.token_reader.apply_final_norm),
        ("token width", config.token_width),
        ("classes", config.num_labels),
        ("backbone frozen", config.freeze_backbone),
    ]
    return rows


def build_model_card(
    model,
    repo_id: str,
    card_info: ProbeCardInfo | dict | None = None,
    *,
    revision: str | None = None,
    attention_map: str | None = None,
    token: str | bool | None = None,
) -> ModelCard:
    """The model card of a probe repository.

    Args:
        model: the probe.
        repo_id: the repository the card is for (the usage snippet loads from it).
        card_info: evaluation and training details (a `ProbeCardInfo` or a dict of its fields).
        revision: branch the probe is pushed to, if not ``main`` (the snippet then pins it).
        attention_map: file name of the attention-map figure in the repository, to show in the card.
        token: token to read the backbone's card (for its licence).
    """
    info = card_info if isinstance(card_info, ProbeCardInfo) else ProbeCardInfo(**(card_info or {}))
    config = model.config
    model_name = info.model_name or repo_id.split("/")[-1]
    backbone = config.backbone_name_or_path
    backbone_on_hub = is_hub_id(backbone)
    license_ = info.license or (backbone_license(backbone, config.backbone_revision, token) if backbone else None)

    # A data set read from a local folder is named by the folder in the results, and not listed as a Hub data set.
    dataset_on_hub = is_hub_id(info.dataset)
    dataset_type = info.dataset if dataset_on_hub or not info.dataset else Path(info.dataset).name
    dataset_name = info.dataset_name or dataset_type
    eval_results, result_rows = [], []
    source_name, source_url = info.results_source or (None, None)
    metrics = [("Top-1 Accuracy", info.top1), ("Top-5 Accuracy", info.top5), *info.extra_results.items()]
    intervals = {"Top-1 Accuracy": info.top1_interval, "Top-5 Accuracy": info.top5_interval}
    for name, value in metrics:
        if value is None:
            continue
        metric_name, interval = name + info.metric_suffix, intervals.get(name)
        eval_results.append(
            EvalResult(
                task_type="image-classification",
                task_name="Image Classification",
                dataset_type=dataset_type,
                dataset_name=dataset_name,
                dataset_config=info.dataset_config,
                dataset_split=info.dataset_split,
                metric_type="accuracy",
                metric_name=metric_name,
                metric_value=float(value),
                source_name=source_name,
                source_url=source_url,
            )
        )
        result_rows.append(
            {
                "dataset": dataset_name,
                "split": info.dataset_split,
                "metric": metric_name,
                "value": value,
                "interval": f"{interval[0]:.1f} to {interval[1]:.1f}" if interval else "-",
            }
        )

    pooling = config.pooling_name
    tags = ["image-classification", "vision", "attentive-probing", f"{pooling}-probe", LIBRARY_NAME, *info.tags]
    card_data = ModelCardData(
        library_name=LIBRARY_NAME,
        pipeline_tag="image-classification",
        license=license_,
        base_model=backbone if backbone_on_hub else None,
        base_model_relation="adapter" if backbone_on_hub else None,
        datasets=[info.dataset] if dataset_on_hub else None,
        metrics=["accuracy"] if eval_results else None,
        tags=list(dict.fromkeys(tags)),
        model_name=model_name,
        eval_results=eval_results or None,
        hf_efficient_probing=info.spread_metadata(),
    )
    num_maps = count_attention_maps(model)
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        model_name=model_name,
        repo_id=repo_id,
        revision=revision if revision not in (None, "main") else None,
        probe_description=POOLING_DESCRIPTIONS.get(pooling, f"A {pooling!r} attentive probe"),
        backbone=backbone or "(backbone saved with the probe)",
        backbone_url=f"https://huggingface.co/{backbone}" if backbone_on_hub else "#",
        backbone_revision=config.backbone_revision,
        probe_only=config.freeze_backbone,
        dataset_name=dataset_name,
        num_parameters=sum(p.numel() for p in model.probe.parameters()),
        hyper_parameters=_hyper_parameters(model),
        results=result_rows,
        best_epoch=info.best_epoch,
        training=list(info.training.items()),
        has_attention=num_maps is not None,
        num_attention_maps=num_maps,
        attention_unit=attention_unit(model.probe.pooling),
        attention_map=attention_map,
        notes=[*info.spread_notes(), *info.notes],
        results_source=info.results_source,
    )
