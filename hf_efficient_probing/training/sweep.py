"""The default protocol's training: a grid of probes in one `ProbingTrainer` run, selection on held-out train data,
the evaluation split read once per probe kind, and a summary of every member (JSON, Markdown and a plot)."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field

from ..probes.counting import count_trainable_parameters
from ..probes.patch_grid import as_pair
from .arguments import ProbingTrainingArguments
from .data import probing_collator
from .grid import GridSelection, ProbingGridModel, check_grid_fits, chosen_members, condense_printed_logs
from .metrics import TOP_K_ACCURACY_PATH
from .recipe import resolve_recipe
from .trainer import (
    TOP_K,
    ProbingTrainer,
    _percent,
    build_compute_metrics,
    last_complete_checkpoint,
    rank_top_k,
    remove_checkpoints,
    save_probe,
    token_cache_markdown,
    write_summary,
)

logger = logging.getLogger(__name__)

SUMMARY_PLOT = "run_summary.png"


@dataclass
class GridResult:
    """What a grid run produced: per probe kind, the chosen member's metrics (``eval_*`` on the evaluation split,
    ``selection_*`` on the held-out split) and where its probe was saved; and the run summary."""

    metrics: dict[str, dict[str, float]]
    paths: dict[str, str]
    summary: dict
    trainer: ProbingTrainer = field(repr=False)
    member_metrics: dict[str, dict[str, float]] = field(default_factory=dict)


def grid_compute_metrics(names: list[str]):
    """Top-1/top-5 accuracy of every member (``<name>_accuracy``, ``<name>_top5_accuracy``) from ``[N, K, 5]`` ranked
    class indices, through the package's offline `evaluate` module: one call scores all K members."""
    import evaluate
    import numpy as np

    metric = evaluate.load(TOP_K_ACCURACY_PATH, keep_in_memory=True)

    def compute_metrics(prediction) -> dict[str, float]:
        ranked = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        ranked, labels = np.asarray(ranked), np.asarray(prediction.label_ids)
        scores = metric.compute(
            predictions=ranked.reshape(-1, ranked.shape[-1]),
            references=np.repeat(labels, len(names)),
            k=TOP_K,
            num_probes=len(names),
        )
        return {f"{name}_{key}": values[index] for key, values in scores.items() for index, name in enumerate(names)}

    return compute_metrics


def grid_training_arguments(args: ProbingTrainingArguments, num_train: int) -> ProbingTrainingArguments:
    """The default recipe for ``num_train`` images, with what a grid needs: evaluation on the selection split (and a
    log entry) every epoch, a checkpoint every ``checkpoint_epochs`` epochs (about ``CHECKPOINTS_PER_RUN`` per run; the best-epoch
    snapshots are inside it, and only the newest is kept), no Trainer-level "best model" (each member has its own
    best epoch), and no gradient clipping (a global norm would couple the members)."""
    args = resolve_recipe(args, "default", num_train)
    steps_per_epoch = max(1, num_train // (args.per_device_train_batch_size * args.world_size))
    steps_per_epoch = max(1, steps_per_epoch // args.gradient_accumulation_steps)
    checkpoint_epochs = max(1, math.ceil(args.num_train_epochs / CHECKPOINTS_PER_RUN))
    # Counted in steps, so that a checkpoint step also evaluates, first: the checkpoint holds that epoch's snapshot.
    args.eval_strategy = args.logging_strategy = args.save_strategy = "steps"
    args.eval_steps = args.logging_steps = steps_per_epoch
    args.save_steps = steps_per_epoch * checkpoint_epochs
    args.load_best_model_at_end, args.metric_for_best_model, args.save_total_limit = False, None, 1
    args.max_grad_norm = 0.0
    return args


CHECKPOINTS_PER_RUN = 10


def train_grid(
    grid: ProbingGridModel,
    args: ProbingTrainingArguments,
    train_dataset,
    selection_dataset,
    evaluation_dataset,
    image_processor=None,
    resume_from_checkpoint: bool | str | None = None,
    callbacks=None,
    run_info: dict | None = None,
    evaluate_every_member: bool = False,
) -> GridResult:
    """Train every member of ``grid`` together; choose, per probe kind, the member and epoch with the best accuracy
    on ``selection_dataset`` (held out from train); evaluate each chosen probe once on ``evaluation_dataset``; save
    it (``args.output_dir`` for one kind, ``args.output_dir/<kind>`` for several) and write the summary.

    A run killed mid-way continues from its newest complete checkpoint when started again with the same arguments
    (``resume_from_checkpoint=None``), and ends with the same weights and log history.

    ``evaluate_every_member`` (a sweep that reports every probe, e.g. accuracy against parameters): every member,
    at its own best epoch on the selection split, is also evaluated once and saved in ``output_dir/members/<name>``.
    """
    start = time.time()
    args = grid_training_arguments(args, len(train_dataset))
    first = train_dataset[0]
    num_tokens = first["tokens"].shape[0] if "tokens" in first else grid.layout.num_prefix_tokens + _num_patches(grid)
    check_grid_fits(grid, args.per_device_train_batch_size, num_tokens, args.device)
    trainer = ProbingTrainer(
        model=grid,
        args=args,
        data_collator=probing_collator,
        train_dataset=train_dataset,
        eval_dataset=selection_dataset,
        compute_metrics=grid_compute_metrics(grid.metric_names()),
        preprocess_logits_for_metrics=rank_top_k,
        callbacks=[GridSelection(), *(callbacks or [])],
    )
    condense_printed_logs(trainer, grid.members)
    if resume_from_checkpoint is None:
        resume_from_checkpoint = last_complete_checkpoint(args.output_dir)
        if resume_from_checkpoint:
            logger.info("Resuming from %s", resume_from_checkpoint)
    train_output = trainer.train(resume_from_checkpoint=resume_from_checkpoint or None)
    trainer.save_state()

    metrics, paths = {}, {}
    chosen = chosen_members(grid)
    for kind, index in chosen.items():
        model = grid.best_member(index)
        member = grid.members[index]
        evaluation = evaluate_once(model, args, grid.member_dataset(index, evaluation_dataset))
        name = member.name
        metrics[kind] = {
            **evaluation,
            "eval_samples": len(evaluation_dataset),
            "selection_accuracy": grid.best_accuracy[index].item(),
            "selection_top5_accuracy": _best_entry(trainer.state.log_history, name).get(f"eval_{name}_top5_accuracy"),
            "selection_samples": len(selection_dataset),
            "best_epoch": grid.best_epoch[index].item(),
            "learning_rate": member.learning_rate,
            "feature_layer": member.layer,
            "train_samples": len(train_dataset),
            "train_runtime": train_output.metrics.get("train_runtime"),
        }
        paths[kind] = args.output_dir if len(chosen) == 1 else os.path.join(args.output_dir, kind)
    member_metrics = {}
    if evaluate_every_member:
        for index, member in enumerate(grid.members):
            model = grid.best_member(index)
            member_metrics[member.name] = {
                **evaluate_once(model, args, grid.member_dataset(index, evaluation_dataset)),
                "selection_accuracy": grid.best_accuracy[index].item(),
                "best_epoch": grid.best_epoch[index].item(),
                "probe_parameters": _head_parameters(grid, index),
            }
            if trainer.is_world_process_zero():
                save_probe(model, os.path.join(args.output_dir, "members", member.name))
    summary = grid_summary(grid, trainer, chosen, metrics, run_info or {}, time.time() - start)
    for member in summary["members"]:
        member.update(member_metrics.get(member["name"], {}))
    if trainer.is_world_process_zero():
        for kind, index in chosen.items():
            save_probe(grid.best_member(index), paths[kind])
            if image_processor is not None:
                image_processor.save_pretrained(paths[kind])
            with open(os.path.join(paths[kind], "all_results.json"), "w") as handle:
                json.dump(metrics[kind], handle, indent=2)
        if len(chosen) > 1:
            with open(os.path.join(args.output_dir, "all_results.json"), "w") as handle:
                json.dump(
                    {f"{kind}_{key}": value for kind, m in metrics.items() for key, value in m.items()},
                    handle,
                    indent=2,
                )
        write_grid_summary(summary, args.output_dir)
        if not args.keep_checkpoints:
            remove_checkpoints(args.output_dir)
    trainer.accelerator.wait_for_everyone()
    return GridResult(metrics=metrics, paths=paths, summary=summary, trainer=trainer, member_metrics=member_metrics)


def _num_patches(grid: ProbingGridModel) -> int:
    config = grid.reader.config
    (height, width), (patch_height, patch_width) = as_pair(config.image_size), as_pair(config.patch_size)
    return (height // patch_height) * (width // patch_width)


def evaluate_once(model, args: ProbingTrainingArguments, evaluation_dataset) -> dict[str, float]:
    """``eval_accuracy`` and ``eval_top5_accuracy`` of one probe on the evaluation split: its only reading."""
    eval_args = copy.copy(args)
    eval_args.report_to = []
    trainer = ProbingTrainer(
        model=model,
        args=eval_args,
        data_collator=probing_collator,
        eval_dataset=evaluation_dataset,
        compute_metrics=build_compute_metrics(),
        preprocess_logits_for_metrics=rank_top_k,
    )
    results = trainer.evaluate()
    return {key: value for key, value in results.items() if key in ("eval_accuracy", f"eval_top{TOP_K}_accuracy")}


def _best_entry(log_history: list[dict], name: str) -> dict:
    """The earliest evaluation entry with ``name``'s best selection accuracy."""
    entries = [entry for entry in log_history if f"eval_{name}_accuracy" in entry]
    return max(entries, key=lambda entry: entry[f"eval_{name}_accuracy"]) if entries else {}


def grid_summary(grid, trainer, chosen: dict[str, int], metrics: dict, run_info: dict, runtime_s: float) -> dict:
    """A JSON-able record of a grid run: every member's selection result, the chosen ones, the recipe."""
    args, history = trainer.args, trainer.state.log_history
    members = []
    for index, member in enumerate(grid.members):
        curve = [
            {"epoch": entry["epoch"], "selection_accuracy": entry[f"eval_{member.name}_accuracy"]}
            for entry in history
            if f"eval_{member.name}_accuracy" in entry
        ]
        members.append(
            {
                "name": member.name,
                "kind": member.kind,
                "layer": member.layer,
                "learning_rate": member.learning_rate,
                "selection_accuracy": grid.best_accuracy[index].item(),
                "best_epoch": grid.best_epoch[index].item(),
                "per_epoch": curve,
            }
        )
    config = grid.member_config(next(iter(chosen.values())))
    return {
        "protocol": "default",
        "selection": "member (kind x layer x learning rate) and epoch chosen on the selection split, held out from "
        "train; the evaluation split was read once, by each chosen probe",
        "backbone": config.backbone_name_or_path or f"{config.backbone_config.model_type} built from its config",
        "backbone_revision": config.backbone_revision,
        "members": members,
        "chosen": {
            kind: {
                "name": grid.members[index].name,
                "probe_parameters": _head_parameters(grid, index),
                **metrics[kind],
            }
            for kind, index in chosen.items()
        },
        "optimizer": args.optimizer,
        "effective_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
        "epochs": args.num_train_epochs,
        "warmup_epochs": args.warmup_epochs,
        "optimizer_steps": trainer.state.global_step,
        "world_size": args.world_size,
        "seed": args.seed,
        "train_loss_per_epoch": [
            {"epoch": entry["epoch"], "loss": entry["loss"]} for entry in history if "loss" in entry
        ],
        "runtime_s": round(runtime_s, 2),
        **run_info,
    }


def _head_parameters(grid: ProbingGridModel, index: int) -> int:
    return count_trainable_parameters(grid.heads[index])


def write_grid_summary(summary: dict, output_dir: str) -> None:
    """``run_summary.json``, ``run_summary.md`` (a table of every member) and ``run_summary.png`` (the plot)."""
    write_summary(summary, output_dir, markdown=grid_summary_markdown)
    plot_grid(summary, os.path.join(output_dir, SUMMARY_PLOT))


def grid_summary_markdown(summary: dict) -> str:
    lines = ["# Probing run (default protocol)", "", summary["selection"] + ".", "", "## Chosen probes", ""]
    lines += [
        "| kind | member | selection top-1 (%) | best epoch | eval top-1 (%) | eval top-5 (%) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for kind, chosen in summary["chosen"].items():
        lines.append(
            f"| {kind} | {chosen['name']} | {_percent(chosen['selection_accuracy'])} | {chosen['best_epoch']:g} | "
            f"{_percent(chosen.get('eval_accuracy'))} | {_percent(chosen.get(f'eval_top{TOP_K}_accuracy'))} |"
        )
    lines += [
        "",
        "## Every member",
        "",
        "| kind | layer | lr | selection top-1 (%) | best epoch |",
        "|---|---:|---:|---:|---:|",
    ]
    for member in summary["members"]:
        lines.append(
            f"| {member['kind']} | {member['layer']} | {member['learning_rate']:.3g} | "
            f"{_percent(member['selection_accuracy'])} | {member['best_epoch']:g} |"
        )
    recipe = (
        f"{summary['optimizer']}, batch {summary['effective_batch_size']}, {summary['epochs']:g} epochs "
        f"({summary['optimizer_steps']} steps), warm-up {summary['warmup_epochs']:.3g} epochs, cosine"
    )
    lines += ["", "| | |", "|---|---|", f"| Backbone | {summary['backbone']} |", f"| Recipe | {recipe} |"]
    lines += [f"| {key.replace('_', ' ').capitalize()} | {summary[key]} |" for key in _EXTRA_ROWS if key in summary]
    if summary.get("token_cache"):
        lines.append(f"| Token cache | {token_cache_markdown(summary['token_cache'])} |")
    return "\n".join(lines) + "\n"


_EXTRA_ROWS = ("dataset", "train_samples", "selection_samples", "eval_samples", "runtime_s")


def plot_grid(summary: dict, path: str) -> None:
    """Selection accuracy against learning rate, one line per (kind, layer); and the chosen members' curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (sweep_axes, curve_axes) = plt.subplots(1, 2, figsize=(11, 4))
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
    sweep_axes.set(xscale="log", xlabel="peak learning rate", ylabel="selection top-1 (%)", title="Grid")
    sweep_axes.legend()
    by_name = {member["name"]: member for member in summary["members"]}
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
    plt.close(figure)
