"""Reporting: what a run writes and prints about itself, rendered from plain records, written atomically.

Every result file (``all_results.json``, ``run_summary.{json,md,png}``, ``knn_results.json``, a sweep's
``results.{md,json}``) goes through one writer (`atomic.atomic_write_json` / ``atomic_write_text``), so a reader or
a killed run never sees half a file. The records come from the training engine as dicts; nothing here reads a
model, a trainer or a grid. The printed log of a grid is condensed here too: each kind's best member so far.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import numpy as np
from transformers import PrinterCallback, ProgressCallback

from ..atomic import atomic_write_json, atomic_write_text
from ..tables import markdown_table
from .multilabel import MULTI_LABEL_METRICS
from .selection import SELECTION_PREFIX, SINGLE_LABEL_METRICS

_LOGGED = (SINGLE_LABEL_METRICS, MULTI_LABEL_METRICS)  # the per-member figures of a log entry, by kind of labels

SUMMARY_JSON, SUMMARY_MARKDOWN, SUMMARY_PLOT = "run_summary.json", "run_summary.md", "run_summary.png"
RESULTS_JSON = "all_results.json"
TOP_K = 5
TOP1, TOP5 = "eval_accuracy", f"eval_top{TOP_K}_accuracy"
# run-summary entries shown as extra rows of the Markdown tables, when present
EXTRA_ROWS = (
    "protocol",
    "selection",
    "dataset",
    "train_samples",
    "selection_samples",
    "eval_samples",
    "skipped_unreadable_images",
    "shots_per_class",
    "train_fraction",
    "preprocessing",
    "runtime_s",
)


def percent(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def write_results(output_dir: str | os.PathLike, metrics: dict) -> None:
    """``all_results.json``: the figures of the probe saved in ``output_dir``."""
    atomic_write_json(os.path.join(output_dir, RESULTS_JSON), metrics)


def write_summary(summary: dict, output_dir: str | os.PathLike, markdown: Callable[[dict], str] | None = None) -> None:
    """``run_summary.json`` and ``run_summary.md`` (rendered by ``markdown``, a short table by default)."""
    os.makedirs(output_dir, exist_ok=True)
    atomic_write_json(os.path.join(output_dir, SUMMARY_JSON), summary)
    atomic_write_text(os.path.join(output_dir, SUMMARY_MARKDOWN), (markdown or summary_markdown)(summary))


def write_grid_summary(summary: dict, output_dir: str | os.PathLike) -> None:
    """A grid run's summary: JSON, a Markdown table of every member, and the plot."""
    write_summary(summary, output_dir, markdown=grid_summary_markdown)
    plot_grid(summary, os.path.join(output_dir, SUMMARY_PLOT))


def token_cache_markdown(report: dict, unit: str = "images") -> str:
    """How the run got its tokens: an existing cache, or this run's extraction of its ``unit`` (images, or a video
    data set's clips) and its speed."""
    dtypes = f"computed in {report['compute_dtype']}, stored in {report['storage_dtype']}"
    if report["reused"]:
        return f"reused an existing cache, every shard verified ({dtypes})"
    return (
        f"{report['images']} {unit} extracted in {report['seconds']:.1f} s ({report['images_per_second']} {unit}/s "
        f"on {report['processes']} process(es), {dtypes})"
    )


def _extra_rows(summary: dict) -> list[tuple[str, object]]:
    rows = [(key.replace("_", " ").capitalize(), summary[key]) for key in EXTRA_ROWS if key in summary]
    if summary.get("token_cache"):
        unit = "clips" if summary.get("clips") else "images"  # a cache row of a video data set is a clip
        rows.append(("Token cache", token_cache_markdown(summary["token_cache"], unit)))
    return rows


def summary_markdown(summary: dict) -> str:
    """One probe's run (the paper's protocol) as a two-column table."""
    rows = [
        ("Backbone", summary["backbone"]),
        ("Probe", f"{summary['probe']} {summary['probe_config']}"),
        ("Layers read", summary["feature_layers"]),
        ("Trainable parameters", f"{summary['trainable_parameters']:,}"),
        (
            "Optimizer",
            f"{summary['optimizer']}, peak lr {summary['peak_learning_rate']:.4g}, batch {summary['effective_batch_size']}",
        ),
        ("Epochs", f"{summary['epochs_run']:g} of {summary['epochs']:g} ({summary['optimizer_steps']} steps)"),
        ("Best epoch", summary["best_epoch"]),
        *(
            [("mAP (%)", percent(summary["eval_map"])), ("Micro mAP (%)", percent(summary["eval_micro_map"]))]
            + [
                (f"F1 {a} at {summary['multi_label_threshold']} (%)", percent(summary[f"eval_f1_{a}"]))
                for a in ("micro", "macro")
            ]
            if "eval_map" in summary
            else [
                ("Top-1 accuracy (%) [95 % interval]", figure_cell(summary, TOP1)),
                ("Top-5 accuracy (%) [95 % interval]", figure_cell(summary, TOP5)),
            ]
        ),
        *(("Intervals", note) for note in interval_notes(summary)),
        *_extra_rows(summary),
    ]
    return "# Probing run\n\n" + markdown_table(["", ""], [(name, str(value)) for name, value in rows]) + "\n"


def figure_cell(record: dict, name: str) -> str:
    """An evaluation figure in percent with what varies around it: ``± std`` over runs when there are several, and
    its 95 % interval over evaluation images (``[low, high]``)."""
    if record.get(name) is None:
        return "n/a"
    cell = percent(record[name])
    if f"{name}_std" in record:
        cell += f" ± {100 * record[f'{name}_std']:.2f}"
    if f"{name}_interval" in record:
        low, high = record[f"{name}_interval"]
        cell += f" [{100 * low:.1f}, {100 * high:.1f}]"
    return cell


def interval_notes(record: dict) -> list[str]:
    """What each interval of a record covers, in words (the images, the seeds or the episodes)."""
    notes = []
    if record.get("interval_method"):
        notes.append(f"[low, high]: {record['interval_method']}.")
    figure, name = ("eval_map", "mAP") if "eval_map" in record else ("eval_accuracy", "top-1")
    for run in ("seed", "episode"):
        if f"{run}_interval_method" in record:
            low, high = record[f"{figure}_{run}_interval"]
            notes.append(
                f"Over {run}s: {name} {100 * low:.1f} to {100 * high:.1f} ({record[f'{run}_interval_method']})."
            )
    return notes


def _epochs_cell(best_epoch) -> str:
    return ", ".join(f"{epoch:g}" for epoch in best_epoch) if isinstance(best_epoch, list) else f"{best_epoch:g}"


def _per_seed_table(summary: dict) -> list[str]:
    """Each seed's figures of each chosen setting (``--seeds``)."""
    metric = selection_metric(summary)
    selection_heading, evaluation = _SELECTED_ON[metric]
    rows = [
        (kind, seed, percent(figures[f"selection_{metric}"]), f"{figures['best_epoch']:g}", *(figure_cell(figures, key) for _, key in evaluation))
        for kind, probe in summary["chosen"].items()
        for seed, figures in probe.get("per_seed", {}).items()
    ]  # fmt: skip
    if not rows:
        return []
    headers = ["kind", "seed", selection_heading, "best epoch", *(heading for heading, _ in evaluation)]
    return ["## Each seed", markdown_table(headers, rows, ["left", *(["right"] * (len(headers) - 1))])]


# What a grid's tables show of each chosen probe, by the figure it was selected on: (heading, summary key) pairs
_SELECTED_ON = {
    "accuracy": (
        "selection top-1 (%)",
        [("eval top-1 (%)", "eval_accuracy"), ("eval top-5 (%)", "eval_top5_accuracy")],
    ),
    "map": (
        "selection mAP (%)",
        [
            ("eval mAP (%)", "eval_map"),
            ("eval micro mAP (%)", "eval_micro_map"),
            ("eval F1 micro (%)", "eval_f1_micro"),
            ("eval F1 macro (%)", "eval_f1_macro"),
        ],
    ),
}


def selection_metric(summary: dict) -> str:
    """The figure a grid run chose on (``accuracy``, or ``map`` for multi-label probes)."""
    return summary.get("selection_metric", "accuracy")


def grid_summary_markdown(summary: dict) -> str:
    """A grid run (the default protocol): the chosen probes, every member, the recipe."""
    seeds = summary.get("seeds")
    spread = " (mean ± std over seeds)" if seeds else ""
    metric = selection_metric(summary)
    selection_heading, evaluation = _SELECTED_ON[metric]
    chosen = markdown_table(
        ["kind", "member", selection_heading, "best epoch", *(f"{heading}{spread}" for heading, _ in evaluation)],
        [
            (
                kind,
                probe["name"],
                percent(probe[f"selection_{metric}"]),
                _epochs_cell(probe["best_epoch"]),
                *(figure_cell(probe, key) for _, key in evaluation),
            )
            for kind, probe in summary["chosen"].items()
        ],
        ["left", "left", "right", "right", *(["right"] * len(evaluation))],
    )
    seed_column = [("seed", lambda m: str(m.get("seed")), "right")] if seeds else []
    members = markdown_table(
        ["kind", "layer", "lr", *(c[0] for c in seed_column), selection_heading, "best epoch", "epochs trained"],
        [
            (
                m["kind"],
                str(m["layer"]),
                f"{m['learning_rate']:.3g}",
                *(c[1](m) for c in seed_column),
                percent(m[f"selection_{metric}"]),
                f"{m['best_epoch']:g}",
                trained_epochs(m, summary["epochs"]),
            )
            for m in summary["members"]
        ],
        ["left", "right", "right", *(c[2] for c in seed_column), "right", "right", "left"],
    )
    recipe = (
        f"{summary['optimizer']}, batch {summary['effective_batch_size']}, {summary['epochs']:g} epochs "
        f"({summary['optimizer_steps']} steps), warm-up {summary['warmup_epochs']:.3g} epochs, cosine"
    )
    details = markdown_table(
        ["", ""],
        [
            ("Backbone", summary["backbone"]),
            ("Recipe", recipe),
            *_rung_rows(summary),
            *((k, str(v)) for k, v in _extra_rows(summary)),
        ],
    )
    edges = [probe["grid_edge"]["note"] for probe in summary["chosen"].values() if probe.get("grid_edge")]
    sections = [
        "# Probing run (default protocol)",
        summary["selection"] + ".",
        "## Chosen probes",
        chosen,
        *interval_notes(next(iter(summary["chosen"].values()))),
        *edges,
        *_per_seed_table(summary),
        "## Every member",
        members,
        details,
    ]
    return "\n\n".join(sections) + "\n"


def episodes_markdown(summary: dict) -> str:
    """Low-shot episodes: per kind the mean ± std over episodes with both intervals, each episode's figures and
    choice, and each episode's draw."""
    spread = markdown_table(
        ["kind", "eval top-1 (%) (mean ± std over episodes)", "eval top-5 (%)"],
        [(kind, figure_cell(figures, TOP1), figure_cell(figures, TOP5)) for kind, figures in summary["chosen"].items()],
        ["left", "right", "right"],
    )
    each = markdown_table(
        ["kind", "episode (seed)", "chosen", "selection top-1 (%)", "eval top-1 (%)", "eval top-5 (%)"],
        [
            (kind, seed, figures["chosen"], percent(figures["selection_accuracy"]), figure_cell(figures, TOP1),
             figure_cell(figures, TOP5))
            for kind, probe in summary["chosen"].items()
            for seed, figures in probe["per_episode"].items()
        ],
        ["left", "right", "left", "right", "right", "right"],
    )  # fmt: skip
    draws = markdown_table(
        ["episode", "seed", "train", "selection", "selection split"],
        [
            (
                str(e["episode"]),
                str(e["seed"]),
                str(e["train_samples"]),
                str(e["selection_samples"]),
                e["selection_rule"],
            )
            for e in summary["episodes"]
        ],
    )
    title = f"# Low-shot episodes: {summary['shots_per_class']} images per class, {len(summary['episodes'])} draws"
    notes = interval_notes(next(iter(summary["chosen"].values())))
    sections = [title, summary["selection"] + ".", spread, *notes, "## Each episode", each, "## The draws", draws]
    return "\n\n".join(sections) + "\n"


def trained_epochs(member: dict, epochs: float) -> str:
    """When a member trained: every epoch, until the rung that stopped it, or from the rung that added it."""
    started, stopped = member.get("started_epoch", 0), member.get("stopped_epoch")
    if stopped is not None:
        return f"{started:g}-{stopped:g} (stopped at a rung)"
    if started:
        return f"{started:g}-{epochs:g} (added beyond the grid's edge)"
    return f"all {epochs:g}"


def _rung_rows(summary: dict) -> list[tuple[str, str]]:
    """The rungs and the member-epochs trained (every run says the latter: the figure the rungs save on)."""
    rungs, spent, without = summary.get("rungs"), summary["member_epochs"], summary["member_epochs_without_rungs"]
    if not rungs:
        return [("Member-epochs trained", f"{spent:g} (no rungs)")]
    actions = [
        *(
            [f"stop members further than {100 * rungs['margin']:g} points (plus noise) behind their kind's best, "
             f"keeping {rungs['keep']} per kind and layer"]
            if rungs["prune"]
            else []
        ),
        *(["extend the grid's edge"] if rungs["extend_edge"] else []),
    ]  # fmt: skip
    return [
        ("Rungs", f"after epochs {', '.join(str(epoch) for epoch in rungs['epochs'])}: {'; '.join(actions)}"),
        (
            "Member-epochs trained",
            f"{spent:g}, {spent / without - 1:+.0%} against the grid without rungs ({without:g})",
        ),
    ]


def plot_grid(summary: dict, path: str) -> None:
    """Selection accuracy (mAP for multi-label probes) against learning rate, one line per (kind, layer), the members
    stopped at a rung crossed; and the chosen members' curves, with those of the stopped members in grey, crossed
    where they stopped."""
    from matplotlib.figure import Figure  # no pyplot: no global backend, works headless

    key = f"selection_{selection_metric(summary)}"
    label = _SELECTED_ON[selection_metric(summary)][0]

    figure = Figure(figsize=(11, 4))
    sweep_axes, curve_axes = figure.subplots(1, 2)
    lines: dict[tuple, dict[float, list[float]]] = {}
    for member in summary["members"]:
        rates = lines.setdefault((member["kind"], member["layer"]), {})
        rates.setdefault(member["learning_rate"], []).append(100 * member[key])
    for (kind, layer), rates in lines.items():
        rates = dict(sorted(rates.items()))
        means = [float(np.mean(values)) for values in rates.values()]
        stds = [float(np.std(values, ddof=1)) if len(values) > 1 else 0.0 for values in rates.values()]
        line_label = f"{kind}, layer {layer}" + (
            " (mean ± std over seeds, each seed a dot)" if summary.get("seeds") else ""
        )
        line = sweep_axes.errorbar(list(rates), means, yerr=stds, marker="o", capsize=3, label=line_label)
        if summary.get("seeds"):
            for rate, values in rates.items():
                sweep_axes.plot([rate] * len(values), values, ".", color=line[0].get_color(), alpha=0.5)
    stopped = [m for m in summary["members"] if m.get("stopped_epoch") is not None]
    if stopped:
        sweep_axes.plot(
            [m["learning_rate"] for m in stopped],
            [100 * m[key] for m in stopped],
            "x",
            color="black",
            markersize=9,
            label="stopped at a rung",
        )
    sweep_axes.set(xscale="log", xlabel="peak learning rate", ylabel=label, title="Grid")
    sweep_axes.legend()
    by_name = {member["name"]: member for member in summary["members"]}
    for member in summary["members"]:  # where each stopped member's curve ended
        if member.get("stopped_epoch") is not None and member["per_epoch"]:
            curve = member["per_epoch"]
            curve_axes.plot([p["epoch"] for p in curve], [100 * p[key] for p in curve], color="0.75", linewidth=1)
            curve_axes.plot(curve[-1]["epoch"], 100 * curve[-1][key], "x", color="0.5")
    for kind, chosen in summary["chosen"].items():
        for name in chosen.get("members", [chosen["name"]]):  # every seed of the chosen setting
            curve = by_name[name]["per_epoch"]
            curve_axes.plot([p["epoch"] for p in curve], [100 * p[key] for p in curve], label=f"{kind}: {name}")
    curve_axes.set(xlabel="epoch", ylabel=label, title="Chosen members")
    curve_axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


# ----------------------------------------------------------------------------------------------------------------
# The printed log of a grid


def condensed_logs(logs: dict, members: Sequence[tuple[str, str]]) -> dict:
    """A grid's log entry for people: each member's selection metrics (2 per member, in every entry) replaced by the
    best member of each probe kind and its accuracy (``selection_best_<kind>_accuracy``, ``selection_best_<kind>``;
    a multi-label grid's mean average precision, ``selection_best_<kind>_map``).
    ``members`` are ``(name, kind)`` pairs. The Trainer's log history keeps every member's metrics."""
    condensed = dict(logs)
    best: dict[str, tuple[float, str]] = {}
    metric = next((m for m, _ in _LOGGED if any(f"{SELECTION_PREFIX}_{n}_{m}" in logs for n, _ in members)), None)
    for name, kind in members:
        for first, second in _LOGGED:
            condensed.pop(f"{SELECTION_PREFIX}_{name}_{second}", None)
            accuracy = condensed.pop(f"{SELECTION_PREFIX}_{name}_{first}", None)
            if accuracy is not None and accuracy > best.get(kind, (-math.inf, ""))[0]:
                best[kind] = (accuracy, name)
    epoch = condensed.pop("epoch", None)
    for kind, (accuracy, name) in best.items():
        condensed[f"{SELECTION_PREFIX}_best_{kind}_{metric}"], condensed[f"{SELECTION_PREFIX}_best_{kind}"] = (
            accuracy,
            name,
        )
    return condensed if epoch is None else {**condensed, "epoch": epoch}


class _CondensedGridLogs:
    def __init__(self, members: Sequence[tuple[str, str]], **kwargs):
        super().__init__(**kwargs)
        self.members = list(members)

    def on_log(self, args, state, control, logs=None, **kwargs):
        return super().on_log(args, state, control, logs=condensed_logs(logs or {}, self.members), **kwargs)


class GridPrinterCallback(_CondensedGridLogs, PrinterCallback):
    """`PrinterCallback` (``--disable_tqdm``) with a grid's log entries condensed."""


class GridProgressCallback(_CondensedGridLogs, ProgressCallback):
    """`ProgressCallback` (the progress bar) with a grid's log entries condensed."""


def condense_printed_logs(trainer, members: Sequence[tuple[str, str]]) -> None:
    """Swap the Trainer's printer (bar or plain print) for its condensed version; a notebook's display stays."""
    for printer, condensed in ((PrinterCallback, GridPrinterCallback), (ProgressCallback, GridProgressCallback)):
        found = [callback for callback in trainer.callback_handler.callbacks if type(callback) is printer]
        if found:
            trainer.remove_callback(found[0])
            trainer.add_callback(condensed(members))
