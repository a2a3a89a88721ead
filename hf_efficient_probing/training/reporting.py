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

from transformers import PrinterCallback, ProgressCallback

from ..atomic import atomic_write_json, atomic_write_text
from ..tables import markdown_table
from .selection import SELECTION_PREFIX

SUMMARY_JSON, SUMMARY_MARKDOWN, SUMMARY_PLOT = "run_summary.json", "run_summary.md", "run_summary.png"
RESULTS_JSON = "all_results.json"
TOP_K = 5
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


def token_cache_markdown(report: dict) -> str:
    """How the run got its tokens: an existing cache, or this run's extraction and its speed."""
    dtypes = f"computed in {report['compute_dtype']}, stored in {report['storage_dtype']}"
    if report["reused"]:
        return f"reused an existing cache, every shard verified ({dtypes})"
    return (
        f"{report['images']} images extracted in {report['seconds']:.1f} s ({report['images_per_second']} images/s "
        f"on {report['processes']} process(es), {dtypes})"
    )


def _extra_rows(summary: dict) -> list[tuple[str, object]]:
    rows = [(key.replace("_", " ").capitalize(), summary[key]) for key in EXTRA_ROWS if key in summary]
    if summary.get("token_cache"):
        rows.append(("Token cache", token_cache_markdown(summary["token_cache"])))
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
        ("Top-1 accuracy (%)", percent(summary["eval_accuracy"])),
        ("Top-5 accuracy (%)", percent(summary["eval_top5_accuracy"])),
        *_extra_rows(summary),
    ]
    return "# Probing run\n\n" + markdown_table(["", ""], [(name, str(value)) for name, value in rows]) + "\n"


def grid_summary_markdown(summary: dict) -> str:
    """A grid run (the default protocol): the chosen probes, every member, the recipe."""
    chosen = markdown_table(
        ["kind", "member", "selection top-1 (%)", "best epoch", "eval top-1 (%)", "eval top-5 (%)"],
        [
            (
                kind,
                probe["name"],
                percent(probe["selection_accuracy"]),
                f"{probe['best_epoch']:g}",
                percent(probe.get("eval_accuracy")),
                percent(probe.get(f"eval_top{TOP_K}_accuracy")),
            )
            for kind, probe in summary["chosen"].items()
        ],
        ["left", "left", "right", "right", "right", "right"],
    )
    members = markdown_table(
        ["kind", "layer", "lr", "selection top-1 (%)", "best epoch", "epochs trained"],
        [
            (
                m["kind"],
                str(m["layer"]),
                f"{m['learning_rate']:.3g}",
                percent(m["selection_accuracy"]),
                f"{m['best_epoch']:g}",
                trained_epochs(m, summary["epochs"]),
            )
            for m in summary["members"]
        ],
        ["left", "right", "right", "right", "right", "left"],
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
        *edges,
        "## Every member",
        members,
        details,
    ]
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
    """Selection accuracy against learning rate, one line per (kind, layer), the members stopped at a rung crossed;
    and the chosen members' curves, with those of the stopped members in grey, crossed where they stopped."""
    from matplotlib.figure import Figure  # no pyplot: no global backend, works headless

    figure = Figure(figsize=(11, 4))
    sweep_axes, curve_axes = figure.subplots(1, 2)
    lines: dict[tuple, list] = {}
    for member in summary["members"]:
        lines.setdefault((member["kind"], member["layer"]), []).append(member)
    for (kind, layer), members in lines.items():
        members = sorted(members, key=lambda m: m["learning_rate"])
        sweep_axes.plot(
            [m["learning_rate"] for m in members],
            [100 * m["selection_accuracy"] for m in members],
            marker="o",
            label=f"{kind}, layer {layer}",
        )
    stopped = [m for m in summary["members"] if m.get("stopped_epoch") is not None]
    if stopped:
        sweep_axes.plot(
            [m["learning_rate"] for m in stopped],
            [100 * m["selection_accuracy"] for m in stopped],
            "x",
            color="black",
            markersize=9,
            label="stopped at a rung",
        )
    sweep_axes.set(xscale="log", xlabel="peak learning rate", ylabel="selection top-1 (%)", title="Grid")
    sweep_axes.legend()
    by_name = {member["name"]: member for member in summary["members"]}
    for member in summary["members"]:  # where each stopped member's curve ended
        if member.get("stopped_epoch") is not None and member["per_epoch"]:
            curve = member["per_epoch"]
            curve_axes.plot(
                [p["epoch"] for p in curve], [100 * p["selection_accuracy"] for p in curve], color="0.75", linewidth=1
            )
            curve_axes.plot(curve[-1]["epoch"], 100 * curve[-1]["selection_accuracy"], "x", color="0.5")
    for kind, chosen in summary["chosen"].items():
        curve = by_name[chosen["name"]]["per_epoch"]
        curve_axes.plot(
            [p["epoch"] for p in curve],
            [100 * p["selection_accuracy"] for p in curve],
            label=f"{kind}: {chosen['name']}",
        )
    curve_axes.set(xlabel="epoch", ylabel="selection top-1 (%)", title="Chosen members")
    curve_axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


# ----------------------------------------------------------------------------------------------------------------
# The printed log of a grid


def condensed_logs(logs: dict, members: Sequence[tuple[str, str]]) -> dict:
    """A grid's log entry for people: each member's selection metrics (2 per member, in every entry) replaced by the
    best member of each probe kind and its accuracy (``selection_best_<kind>_accuracy``, ``selection_best_<kind>``).
    ``members`` are ``(name, kind)`` pairs. The Trainer's log history keeps every member's metrics."""
    condensed = dict(logs)
    best: dict[str, tuple[float, str]] = {}
    for name, kind in members:
        accuracy = condensed.pop(f"{SELECTION_PREFIX}_{name}_accuracy", None)
        condensed.pop(f"{SELECTION_PREFIX}_{name}_top5_accuracy", None)
        if accuracy is not None and accuracy > best.get(kind, (-math.inf, ""))[0]:
            best[kind] = (accuracy, name)
    epoch = condensed.pop("epoch", None)
    for kind, (accuracy, name) in best.items():
        condensed[f"{SELECTION_PREFIX}_best_{kind}_accuracy"], condensed[f"{SELECTION_PREFIX}_best_{kind}"] = (
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
