"""The training engine: a grid of probes (:func:`train_grid`) or one probe (:func:`train_probe`) through the one
`ProbingTrainer` construction, resumed only for the same run, its outputs saved and summarised.

``train_grid`` trains every member together, chooses per probe kind the member and epoch with the best accuracy on
the selection split (held out from train), evaluates each chosen probe once on the evaluation split and saves it.
``train_probe`` is the paper's protocol: one probe, its best epoch kept *on* the evaluation split (optimistic: its
summary says so). Both take arguments whose recipe is already filled (`training.recipes`), and save next to every
probe the run's evaluation preprocessing, so the probe classifies as the run measured it.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from transformers import EarlyStoppingCallback, TrainerCallback

from ..probes.counting import count_trainable_parameters
from ..probes.patch_grid import as_pair
from .arguments import ProbingTrainingArguments
from .grid import ProbingGridModel, check_grid_fits
from .lora import freeze_lora, has_lora
from .recipes import check_resolved, effective_batch_size, peak_learning_rate, recipe_identity
from .reporting import TOP_K, condense_printed_logs, write_grid_summary, write_results, write_summary
from .resume import remove_checkpoints, resume_point
from .rungs import GridRungs, Rungs, edge_report
from .selection import SELECTION_PREFIX, GridSelection, best_epoch, chosen_members
from .trainer import ProbingTrainer, build_trainer

logger = logging.getLogger(__name__)


@dataclass
class RunOptions:
    """What a training run does besides training.

    Attributes:
        image_processor: saved beside every probe (the run's evaluation preprocessing), so ``pipeline`` works.
        resume_from_checkpoint: a checkpoint path, ``True`` for the newest, ``False`` to start over; ``None``
            resumes from the newest complete checkpoint of this run in ``output_dir`` (a killed run continues).
        callbacks: extra Trainer callbacks.
        run_info: extra entries of the run summary (data set, sizes, token cache, ...).
        run_identity: what the run trains on and how (`training.job.ProbingJob.identity`), recorded in every
            checkpoint and compared before resuming; by default what the engine itself sees.
        evaluate_every_member: a grid also evaluates every member once at its own best epoch and saves it in
            ``output_dir/members/<name>`` (a sweep that reports every probe).
        rungs: where a grid stops its members out of contention and extends its edge (`training.rungs.Rungs`; the
            grid holds its reserve members already); ``None`` trains every member to the end.
    """

    image_processor: Any = None
    resume_from_checkpoint: bool | str | None = None
    callbacks: Sequence[TrainerCallback] = ()
    run_info: dict = field(default_factory=dict)
    run_identity: dict | None = None
    evaluate_every_member: bool = False
    rungs: Rungs | None = None


@dataclass
class GridSplits:
    """The three splits of a grid run: trained on, chosen on (held out from train), reported on (read once)."""

    train: Any
    selection: Any
    evaluation: Any


@dataclass
class GridResult:
    """What a grid run produced: per probe kind, the chosen member's metrics (``eval_*`` on the evaluation split,
    ``selection_*`` on the held-out split) and where its probe was saved; and the run summary."""

    metrics: dict[str, dict[str, float]]
    paths: dict[str, str]
    summary: dict
    trainer: ProbingTrainer = field(repr=False)
    member_metrics: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class ProbingResult:
    """What a single-probe run produced: final evaluation metrics of the best epoch, and the run summary."""

    metrics: dict[str, float]
    summary: dict
    trainer: ProbingTrainer = field(repr=False)


def fit(trainer: ProbingTrainer, options: RunOptions):
    """Train, resuming only from a checkpoint of this same run (`training.resume.resume_point`)."""
    args = trainer.args
    checkpoint = resume_point(
        args.output_dir, trainer.run_identity, options.resume_from_checkpoint, args.overwrite_output_dir
    )
    output = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_state()
    return output


def save_probe(model, output_dir: str, image_processor=None) -> None:
    """Save a final probe with the preprocessing it was measured with. A LoRA-tuned backbone is frozen again first:
    the adapter is then saved beside the probe (``backbone_adapter/``, peft's format)."""
    if has_lora(model):
        freeze_lora(model)
    model.save_pretrained(output_dir)
    if image_processor is not None:
        image_processor.save_pretrained(output_dir)


def evaluate_once(model, args: ProbingTrainingArguments, evaluation_dataset) -> dict[str, float]:
    """``eval_accuracy`` and ``eval_top5_accuracy`` of one probe on the evaluation split: its only reading."""
    eval_args = copy.copy(args)
    eval_args.report_to = []
    results = build_trainer(model, eval_args, (None, evaluation_dataset)).evaluate()
    return {key: value for key, value in results.items() if key in ("eval_accuracy", f"eval_top{TOP_K}_accuracy")}


# ----------------------------------------------------------------------------------------------------------------
# A grid


def train_grid(
    grid: ProbingGridModel, args: ProbingTrainingArguments, splits: GridSplits, options: RunOptions | None = None
) -> GridResult:
    """Train every member of ``grid`` together; choose, per probe kind, the member and epoch with the best accuracy
    on ``splits.selection``; evaluate each chosen probe once on ``splits.evaluation``; save it (``args.output_dir``
    for one kind, ``args.output_dir/<kind>`` for several) and write the summary. ``args`` come from
    `recipes.grid_arguments`. A run killed mid-way continues from its newest complete checkpoint when started again
    with the same arguments and ends with the same weights and log history."""
    options, start = options or RunOptions(), time.time()
    check_resolved(args)
    check_grid_fits(grid, args.per_device_train_batch_size, _num_tokens(grid, splits.train), args.device)
    rungs = options.rungs if options.rungs is not None and options.rungs.active else None
    rung_record = rungs.record(args.num_train_epochs) if rungs else None
    identity = options.run_identity or {
        "members": grid.metric_names(),
        "recipe": recipe_identity(args),
        "rungs": rung_record,
    }
    callbacks = [GridSelection()]  # first: a rung reads the snapshots of its epoch
    if rungs:
        steps = [epoch * args.eval_steps for epoch in rungs.epochs(args.num_train_epochs)]
        callbacks.append(GridRungs(rungs, steps, len(splits.selection)))
    trainer = build_trainer(
        grid, args, (splits.train, splits.selection), grid.training_names, [*callbacks, *options.callbacks], identity
    )
    condense_printed_logs(trainer, [(member.name, member.kind) for member in grid.members])
    train_output = fit(trainer, options)
    chosen = chosen_members([member.kind for member in grid.members], grid.best_accuracy)
    metrics = {kind: _chosen_metrics(grid, trainer, index, splits, train_output) for kind, index in chosen.items()}
    paths = {kind: args.output_dir if len(chosen) == 1 else os.path.join(args.output_dir, kind) for kind in chosen}
    member_metrics = _every_member(grid, trainer, splits.evaluation, options) if options.evaluate_every_member else {}
    edges = {kind: _edge(grid, index, rungs) for kind, index in chosen.items()}
    run_info = {**options.run_info, "rungs": rung_record, "runtime_s": round(time.time() - start, 2)}
    summary = grid_summary(
        grid, trainer, chosen, {k: {**m, "grid_edge": edges[k]} for k, m in metrics.items()}, run_info
    )
    for member in summary["members"]:
        member.update(member_metrics.get(member["name"], {}))
    if trainer.is_world_process_zero():
        for kind, index in chosen.items():
            save_probe(grid.best_member(index), paths[kind], options.image_processor)
            write_results(paths[kind], metrics[kind])
        if len(chosen) > 1:
            write_results(
                args.output_dir, {f"{k}_{key}": value for k, m in metrics.items() for key, value in m.items()}
            )
        write_grid_summary(summary, args.output_dir)
        if not args.keep_checkpoints:
            remove_checkpoints(args.output_dir)
    trainer.accelerator.wait_for_everyone()
    return GridResult(metrics=metrics, paths=paths, summary=summary, trainer=trainer, member_metrics=member_metrics)


def _edge(grid: ProbingGridModel, index: int, rungs: Rungs | None) -> dict | None:
    """The chosen member's place at the edge of the grid, said in the log too (`rungs.edge_report`)."""
    trained = [not waiting for waiting in grid.waiting_mask()]
    report = edge_report(grid.members, index, trained, grid.waiting_mask(), bool(rungs and rungs.extend_edge))
    if report:
        logger.warning(report["note"])
    return report


def _num_tokens(grid: ProbingGridModel, train_dataset) -> int:
    first = train_dataset[0]
    if "tokens" in first:
        return first["tokens"].shape[0]
    clip_grid = grid.member_config(0).clip_token_grid  # a video backbone's space-time tokens
    if clip_grid is not None:
        return grid.layout.num_prefix_tokens + math.prod(clip_grid)
    config = grid.reader.config
    (height, width), (patch_height, patch_width) = as_pair(config.image_size), as_pair(config.patch_size)
    return grid.layout.num_prefix_tokens + (height // patch_height) * (width // patch_width)


def _chosen_metrics(grid, trainer, index: int, splits: GridSplits, train_output) -> dict:
    """The chosen member's figures: the evaluation split read once, at its best epoch on the selection split."""
    member = grid.members[index]
    evaluation = evaluate_once(grid.best_member(index), trainer.args, grid.member_dataset(index, splits.evaluation))
    best = best_epoch(trainer.state.log_history, f"{SELECTION_PREFIX}_{member.name}_accuracy") or {}
    return {
        **evaluation,
        "eval_samples": len(splits.evaluation),
        "selection_accuracy": grid.best_accuracy[index].item(),
        "selection_top5_accuracy": best.get(f"{SELECTION_PREFIX}_{member.name}_top5_accuracy"),
        "selection_samples": len(splits.selection),
        "best_epoch": grid.best_epoch[index].item(),
        "learning_rate": member.learning_rate,
        "feature_layer": member.layer,
        "train_samples": len(splits.train),
        "train_runtime": train_output.metrics.get("train_runtime"),
    }


def _every_member(grid, trainer, evaluation_dataset, options: RunOptions) -> dict[str, dict]:
    """Every member at its own best epoch, evaluated once and saved in ``output_dir/members/<name>``."""
    results = {}
    for index, member in enumerate(grid.members):
        if grid.waiting_mask()[index]:
            continue  # a reserve no rung started: never trained
        model = grid.best_member(index)
        results[member.name] = {
            **evaluate_once(model, trainer.args, grid.member_dataset(index, evaluation_dataset)),
            "selection_accuracy": grid.best_accuracy[index].item(),
            "best_epoch": grid.best_epoch[index].item(),
            "probe_parameters": count_trainable_parameters(grid.heads[index]),
        }
        if trainer.is_world_process_zero():
            save_probe(model, os.path.join(trainer.args.output_dir, "members", member.name), options.image_processor)
    return results


def grid_summary(grid, trainer, chosen: dict[str, int], metrics: dict, run_info: dict) -> dict:
    """A JSON-able record of a grid run: every member that trained (its selection result, and the epochs it trained
    between, when rungs started or stopped it), the chosen ones, the recipe, the member-epochs trained."""
    history = trainer.state.log_history
    epochs_per_step = trainer.args.num_train_epochs / max(trainer.state.max_steps, 1)
    members = [
        _member_record(grid, index, history, epochs_per_step, trainer.state.global_step)
        for index in range(len(grid.members))
        if not grid.waiting_mask()[index]
    ]
    config = grid.member_config(next(iter(chosen.values())))
    chosen_records = {
        kind: {
            "name": grid.members[index].name,
            "probe_parameters": count_trainable_parameters(grid.heads[index]),
            **metrics[kind],
        }
        for kind, index in chosen.items()
    }
    from_start = sum(grid.from_start_mask())
    return {
        "protocol": "default",
        "selection": "member (kind x layer x learning rate) and epoch chosen on the selection split, held out from "
        "train; the evaluation split was read once, by each chosen probe",
        "backbone": config.backbone_name_or_path or f"{config.backbone_config.model_type} built from its config",
        "backbone_revision": config.backbone_revision,
        "members": members,
        "chosen": chosen_records,
        **_recipe_record(trainer),
        "member_epochs": round(sum(member["epochs_trained"] for member in members), 3),
        "member_epochs_without_rungs": from_start * trainer.args.num_train_epochs,
        "train_loss_per_epoch": [{"epoch": e["epoch"], "loss": e["loss"]} for e in history if "loss" in e],
        **run_info,
    }


def _member_record(grid: ProbingGridModel, index: int, history: list[dict], epochs_per_step: float, last_step: int):
    """One member of the summary: its best selection accuracy and epoch, its curve, the epochs it trained between
    (``started_epoch`` 0 unless a rung added it beyond the grid's edge; ``stopped_epoch`` the rung that stopped it,
    ``None`` when it trained to the end)."""
    member = grid.members[index]
    key = f"{SELECTION_PREFIX}_{member.name}_accuracy"
    started, stopped = grid.started_step[index].item(), grid.stopped_step[index].item()
    started_epoch = started * epochs_per_step
    stopped_epoch = stopped * epochs_per_step if stopped >= 0 else None
    end = stopped_epoch if stopped_epoch is not None else last_step * epochs_per_step
    return {
        "name": member.name,
        "kind": member.kind,
        "layer": member.layer,
        "learning_rate": member.learning_rate,
        "selection_accuracy": grid.best_accuracy[index].item(),
        "best_epoch": grid.best_epoch[index].item(),
        "started_epoch": round(started_epoch, 6),
        "stopped_epoch": None if stopped_epoch is None else round(stopped_epoch, 6),
        "epochs_trained": round(end - started_epoch, 6),
        "per_epoch": [{"epoch": e["epoch"], "selection_accuracy": e[key]} for e in history if key in e],
    }


def _recipe_record(trainer) -> dict:
    args = trainer.args
    return {
        "optimizer": args.optimizer,
        "effective_batch_size": effective_batch_size(args),
        "epochs": args.num_train_epochs,
        "warmup_epochs": args.warmup_epochs,
        "optimizer_steps": trainer.state.global_step,
        "world_size": args.world_size,
        "seed": args.seed,
    }


# ----------------------------------------------------------------------------------------------------------------
# One probe (the paper's protocol)

PAPER_SELECTION_NOTE = (
    "the paper's protocol: the best epoch was chosen on the evaluation split itself, so the reported accuracy is "
    "optimistic (the default protocol chooses on data held out from train)"
)


def train_probe(
    model, args: ProbingTrainingArguments, train_dataset, eval_dataset, options: RunOptions | None = None
) -> ProbingResult:
    """Train ``model``'s probe, keep the best epoch *on* ``eval_dataset``, save it to ``args.output_dir`` and write the
    results. This is the paper's protocol (its selection is optimistic when ``eval_dataset`` is the reported split:
    ``all_results.json``, the summary and a pushed card say so); `train_grid` chooses on a split held out from train.
    ``args``: the paper's recipe filled (`recipes.resolve_recipe(args, "paper", len(train_dataset))`)."""
    options, start = options or RunOptions(), time.time()
    check_resolved(args)
    callbacks = list(options.callbacks)
    if args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(args.early_stopping_patience, args.early_stopping_threshold))
    identity = options.run_identity or {"probe": model.config.to_diff_dict(), "recipe": recipe_identity(args)}
    trainer = build_trainer(model, args, (train_dataset, eval_dataset), callbacks=callbacks, run_identity=identity)
    train_metrics = {**fit(trainer, options).metrics, "train_samples": len(train_dataset)}
    eval_metrics = {**trainer.evaluate(), "eval_samples": len(eval_dataset), "selection": PAPER_SELECTION_NOTE}
    for split, split_metrics in (("train", train_metrics), ("eval", eval_metrics)):
        trainer.log_metrics(split, {k: v for k, v in split_metrics.items() if k != "selection"})
    trainer.save_state()
    summary = run_summary(trainer, eval_metrics, {**options.run_info, "runtime_s": round(time.time() - start, 2)})
    if trainer.is_world_process_zero():
        save_probe(trainer.model, args.output_dir, options.image_processor)
        write_results(args.output_dir, {**train_metrics, **eval_metrics})
        write_summary(summary, args.output_dir)
        if not args.keep_checkpoints:
            remove_checkpoints(args.output_dir)
    trainer.accelerator.wait_for_everyone()
    return ProbingResult(metrics={**train_metrics, **eval_metrics}, summary=summary, trainer=trainer)


def run_summary(trainer: ProbingTrainer, eval_metrics: dict, run_info: dict) -> dict:
    """A JSON-able record of a single-probe run: backbone, probe, parameters, best epoch, top-1/top-5."""
    model, config = trainer.model, trainer.model.config
    history = [entry for entry in trainer.state.log_history if "eval_accuracy" in entry][:-1]  # minus the final eval
    best = best_epoch(history)
    return {
        "protocol": "paper",
        "selection": PAPER_SELECTION_NOTE,
        "backbone": config.backbone_name_or_path or f"{config.backbone_config.model_type} built from its config",
        "backbone_revision": config.backbone_revision,
        "backbone_hidden_size": getattr(config.backbone_config, "hidden_size", None),  # CNNs and timm: none
        "probe": config.pooling_name,
        "probe_config": {"model_type": config.model_type, **config.pooling_kwargs()},
        "feature_layers": list(config.feature_layers),
        "token_selection": config.token_selection,
        "num_labels": config.num_labels,
        "trainable_parameters": count_trainable_parameters(model),
        "probe_parameters": count_trainable_parameters(model.probe),
        "lora": has_lora(model),
        **_recipe_record(trainer),
        "peak_learning_rate": peak_learning_rate(trainer.args),
        "epochs_run": trainer.state.epoch,
        "best_epoch": best["epoch"] if best else None,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "eval_accuracy": eval_metrics.get("eval_accuracy"),
        "eval_top5_accuracy": eval_metrics.get(f"eval_top{TOP_K}_accuracy"),
        "per_epoch": [
            {
                "epoch": e["epoch"],
                "eval_accuracy": e["eval_accuracy"],
                "eval_top5_accuracy": e.get("eval_top5_accuracy"),
            }
            for e in history
        ],
        **run_info,
    }
