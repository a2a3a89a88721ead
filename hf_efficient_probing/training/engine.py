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

import numpy as np
import torch
from transformers import EarlyStoppingCallback, TrainerCallback

from ..evaluation.multilabel import choose_threshold, multi_label_scores
from ..probes.counting import count_trainable_parameters
from ..probes.patch_grid import as_pair
from .arguments import ProbingTrainingArguments
from .figures import EVAL_FIGURES, BootstrapOptions, image_intervals, per_image_hits, spread_figures
from .grid import ProbingGridModel, check_grid_fits
from .lora import freeze_lora, has_lora
from .recipes import check_resolved, effective_batch_size, peak_learning_rate, recipe_identity
from .reporting import TOP_K, condense_printed_logs, write_grid_summary, write_results, write_summary
from .resume import remove_checkpoints, resume_point
from .rungs import GridRungs, Rungs, edge_report
from .selection import SELECTION_PREFIX, GridSelection, best_epoch, chosen_members, scored_metrics
from .trainer import ProbingTrainer, build_trainer, is_multi_label

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
        bootstrap: the bootstrap interval over evaluation images beside every evaluation figure.
        threshold_dataset: a multi-label probe of the paper's protocol: the images its threshold is chosen on (a
            grid chooses on its selection split).
    """

    image_processor: Any = None
    resume_from_checkpoint: bool | str | None = None
    callbacks: Sequence[TrainerCallback] = ()
    run_info: dict = field(default_factory=dict)
    run_identity: dict | None = None
    evaluate_every_member: bool = False
    rungs: Rungs | None = None
    bootstrap: BootstrapOptions = field(default_factory=BootstrapOptions)
    threshold_dataset: Any = None


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
    hits: dict[str, dict] = field(default_factory=dict, repr=False)  # per kind, per evaluation image (mean over seeds)


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


def evaluate_once(
    model, args: ProbingTrainingArguments, evaluation_dataset, bootstrap: BootstrapOptions, threshold_dataset=None
) -> tuple[dict, dict | None]:
    """``eval_accuracy`` and ``eval_top5_accuracy`` of one probe on the evaluation split (its only reading), each
    with its bootstrap interval over the images; and the per-image hits they were computed from. A multi-label probe
    gives its figures of `evaluate_multi_label` instead (its threshold chosen on ``threshold_dataset``), no hits."""
    eval_args = copy.copy(args)
    eval_args.report_to = []
    if is_multi_label(model):
        return evaluate_multi_label(model, eval_args, threshold_dataset, evaluation_dataset), None
    output = build_trainer(model, eval_args, (None, evaluation_dataset)).predict(
        evaluation_dataset, metric_key_prefix="eval"
    )
    hits = per_image_hits(output.predictions, output.label_ids)
    figures = {name: output.metrics[name] for name in EVAL_FIGURES}
    return {**figures, **image_intervals(hits, bootstrap)}, hits


def evaluate_multi_label(model, args: ProbingTrainingArguments, threshold_dataset, evaluation_dataset) -> dict:
    """A multi-label probe's figures: the probability threshold with the best micro F1 on ``threshold_dataset``
    (held out from the evaluation split), set on the probe's config (saved with it, read by ``pipeline``); then its
    only reading of the evaluation split: ``eval_map`` (macro), ``eval_micro_map`` and F1 at that threshold."""
    if threshold_dataset is None:
        raise ValueError("A multi-label probe needs a held-out split to choose its threshold on; none was given.")
    trainer = build_trainer(model, args, (None, evaluation_dataset))
    held_out = trainer.predict(threshold_dataset)
    threshold = choose_threshold(torch.sigmoid(torch.as_tensor(held_out.predictions)), held_out.label_ids)
    model.config.multi_label_threshold = threshold
    evaluation = trainer.predict(evaluation_dataset)
    scores = multi_label_scores(evaluation.predictions, evaluation.label_ids, threshold)
    return {
        **{f"eval_{key}": scores[key] for key in ("map", "micro_map", "f1_micro", "f1_macro", "classes_scored")},
        "multi_label_threshold": threshold,
    }


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
    metric, _ = scored_metrics(grid.member_config(0))
    callbacks = [GridSelection(metric)]  # first: a rung reads the snapshots of its epoch
    if rungs:
        steps = [epoch * args.eval_steps for epoch in rungs.epochs(args.num_train_epochs)]
        callbacks.append(GridRungs(rungs, steps, len(splits.selection)))
    train = grid.training_dataset(splits.train, args.seed)
    trainer = build_trainer(
        grid, args, (train, splits.selection), grid.training_names, [*callbacks, *options.callbacks], identity
    )
    condense_printed_logs(trainer, [(member.name, member.kind) for member in grid.members])
    train_output = fit(trainer, options)
    chosen = chosen_members(grid.members, grid.best_accuracy)
    evaluated = {
        kind: _setting_metrics(grid, trainer, indices, splits, (train_output, options.bootstrap))
        for kind, indices in chosen.items()
    }
    metrics, hits = {kind: m for kind, (m, _) in evaluated.items()}, {kind: h for kind, (_, h) in evaluated.items()}
    paths = {kind: args.output_dir if len(chosen) == 1 else os.path.join(args.output_dir, kind) for kind in chosen}
    member_metrics = _every_member(grid, trainer, splits, options) if options.evaluate_every_member else {}
    edges = {kind: _edge(grid, indices[0], rungs) for kind, indices in chosen.items()}
    run_info = {**options.run_info, "rungs": rung_record, "runtime_s": round(time.time() - start, 2)}
    summary = grid_summary(
        grid, trainer, chosen, {k: {**m, "grid_edge": edges[k]} for k, m in metrics.items()}, run_info
    )
    for member in summary["members"]:
        member.update(member_metrics.get(member["name"], {}))
    if trainer.is_world_process_zero():
        for kind, indices in chosen.items():  # with --seeds, the first seed's probe (its figures: per_seed)
            save_probe(grid.best_member(indices[0]), paths[kind], options.image_processor)
            write_results(paths[kind], metrics[kind])
        if len(chosen) > 1:
            write_results(
                args.output_dir, {f"{k}_{key}": value for k, m in metrics.items() for key, value in m.items()}
            )
        write_grid_summary(summary, args.output_dir)
        if not args.keep_checkpoints:
            remove_checkpoints(args.output_dir)
    trainer.accelerator.wait_for_everyone()
    return GridResult(metrics, paths, summary, trainer, member_metrics, hits)


def _edge(grid: ProbingGridModel, index: int, rungs: Rungs | None) -> dict | None:
    """The chosen member's place at the edge of the grid, said in the log too (`rungs.edge_report`)."""
    trained = [not waiting for waiting in grid.waiting_mask()]
    report = edge_report(grid.members, index, trained, grid.waiting_mask(), bool(rungs and rungs.extend_edge))
    if report:
        logger.warning(report["note"])
    return report


def _num_tokens(grid: ProbingGridModel, train_dataset) -> int:
    streamed = isinstance(train_dataset, torch.utils.data.IterableDataset)  # a stream holds images, never tokens
    first = {} if streamed else train_dataset[0]
    if "tokens" in first:
        return first["tokens"].shape[0]
    clip_grid = grid.member_config(0).clip_token_grid  # a video backbone's space-time tokens
    if clip_grid is not None:
        return grid.layout.num_prefix_tokens + math.prod(clip_grid)
    config = grid.reader.config
    (height, width), (patch_height, patch_width) = as_pair(config.image_size), as_pair(config.patch_size)
    return grid.layout.num_prefix_tokens + (height // patch_height) * (width // patch_width)


def _setting_metrics(grid, trainer, indices: list[int], splits: GridSplits, outcome: tuple) -> tuple[dict, dict]:
    """The chosen setting's figures: its member's (`_chosen_metrics`); with ``--seeds``, the mean, spread and each
    seed's (`figures.spread_figures`), the selection accuracy averaged as the choice averaged it. And its per-image
    hits (averaged over seeds)."""
    train_output, bootstrap = outcome
    results = [_chosen_metrics(grid, trainer, index, splits, train_output, bootstrap) for index in indices]
    if not grid.seeds:
        return results[0]
    per_seed = [metrics for metrics, _ in results]
    seeds = [grid.members[index].seed for index in indices]
    metric, _ = scored_metrics(grid.member_config(indices[0]))
    setting = grid.members[indices[0]].setting
    shared = {key: per_seed[0][key] for key in ("eval_samples", "selection_samples", "learning_rate", "feature_layer")}
    if "multi_label_threshold" in per_seed[0]:  # the saved probe's: each seed chose its own on the selection split
        shared["multi_label_threshold"] = per_seed[0]["multi_label_threshold"]
    per_image = None if results[0][1] is None else [seed_hits for _, seed_hits in results]  # multi-label: none
    hits = None if per_image is None else {name: np.mean([h[name] for h in per_image], axis=0) for name in EVAL_FIGURES}
    return {
        "setting": setting.name,
        **spread_figures(seeds, per_seed, per_image, bootstrap, over="seeds"),
        f"selection_{metric}": sum(m[f"selection_{metric}"] for m in per_seed) / len(per_seed),
        f"selection_{metric}_std": float(np.std([m[f"selection_{metric}"] for m in per_seed], ddof=1))
        if len(per_seed) > 1
        else 0.0,
        "best_epoch": [m["best_epoch"] for m in per_seed],
        **shared,
        "train_samples": per_seed[0]["train_samples"],
        "train_runtime": per_seed[0]["train_runtime"],
        "saved_seed": seeds[0],
    }, hits


def _chosen_metrics(grid, trainer, index: int, splits: GridSplits, train_output, bootstrap) -> tuple[dict, dict]:
    """A chosen member's figures: the evaluation split read once, at its best epoch on the selection split; and its
    per-image hits."""
    member, (metric, second) = grid.members[index], scored_metrics(grid.member_config(index))
    evaluation, hits = _evaluate_member(grid, trainer, index, splits, bootstrap)
    best = best_epoch(trainer.state.log_history, f"{SELECTION_PREFIX}_{member.name}_{metric}") or {}
    return {
        **evaluation,
        "eval_samples": len(splits.evaluation),
        f"selection_{metric}": grid.best_accuracy[index].item(),
        f"selection_{second}": best.get(f"{SELECTION_PREFIX}_{member.name}_{second}"),
        "selection_samples": len(splits.selection),
        "best_epoch": grid.best_epoch[index].item(),
        "learning_rate": member.learning_rate,
        "feature_layer": member.layer,
        "train_samples": len(splits.train),
        "train_runtime": train_output.metrics.get("train_runtime"),
    }, hits


def _evaluate_member(grid, trainer, index: int, splits: GridSplits, bootstrap: BootstrapOptions) -> tuple[dict, dict]:
    """Member ``index`` at its best epoch on the evaluation split, read once (a multi-label member's threshold is
    chosen on the selection split first); its figures and per-image hits."""
    model = grid.best_member(index)
    evaluation, selection = (grid.member_dataset(index, split) for split in (splits.evaluation, splits.selection))
    return evaluate_once(model, trainer.args, evaluation, bootstrap, selection)


def _every_member(grid, trainer, splits: GridSplits, options: RunOptions) -> dict[str, dict]:
    """Every member at its own best epoch, evaluated once and saved in ``output_dir/members/<name>``."""
    results = {}
    for index, member in enumerate(grid.members):
        if grid.waiting_mask()[index]:
            continue  # a reserve no rung started: never trained
        metric, _ = scored_metrics(grid.member_config(index))
        results[member.name] = {
            **_evaluate_member(grid, trainer, index, splits, options.bootstrap)[0],
            f"selection_{metric}": grid.best_accuracy[index].item(),
            "best_epoch": grid.best_epoch[index].item(),
            "probe_parameters": count_trainable_parameters(grid.heads[index]),
        }
        if trainer.is_world_process_zero():
            save_probe(
                grid.best_member(index),
                os.path.join(trainer.args.output_dir, "members", member.name),
                options.image_processor,
            )
    return results


SELECTION_NOTE = (
    "member (kind x layer x learning rate) and epoch chosen on the selection split, held out from train; the "
    "evaluation split was read once, by each chosen probe"
)
SEEDS_SELECTION_NOTE = (
    "setting (kind x layer x learning rate) chosen by its mean {metric} over the seeds on the selection split, held "
    "out from train, each seed's epoch on the same split; the evaluation split was read once per seed, by the "
    "chosen setting"
)


def grid_summary(grid, trainer, chosen: dict[str, list[int]], metrics: dict, run_info: dict) -> dict:
    """A JSON-able record of a grid run: every member that trained (its selection result, and the epochs it trained
    between, when rungs started or stopped it), the chosen ones, the recipe, the member-epochs trained."""
    history = trainer.state.log_history
    epochs_per_step = trainer.args.num_train_epochs / max(trainer.state.max_steps, 1)
    members = [
        _member_record(grid, index, history, epochs_per_step, trainer.state.global_step)
        for index in range(len(grid.members))
        if not grid.waiting_mask()[index]
    ]
    config = grid.member_config(next(iter(chosen.values()))[0])
    metric, _ = scored_metrics(config)
    chosen_records = {
        kind: {
            "name": grid.members[indices[0]].setting.name if grid.seeds else grid.members[indices[0]].name,
            "members": [grid.members[index].name for index in indices],
            "probe_parameters": count_trainable_parameters(grid.heads[indices[0]]),
            **metrics[kind],
        }
        for kind, indices in chosen.items()
    }
    from_start = sum(grid.from_start_mask())
    return {
        "protocol": "default",
        "selection": SEEDS_SELECTION_NOTE.format(metric=metric) if grid.seeds else SELECTION_NOTE,
        "seeds": grid.seeds or None,
        "selection_metric": metric,
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
    member, (metric, _) = grid.members[index], scored_metrics(grid.member_config(index))
    key = f"{SELECTION_PREFIX}_{member.name}_{metric}"
    started, stopped = grid.started_step[index].item(), grid.stopped_step[index].item()
    started_epoch = started * epochs_per_step
    stopped_epoch = stopped * epochs_per_step if stopped >= 0 else None
    end = stopped_epoch if stopped_epoch is not None else last_step * epochs_per_step
    return {
        "name": member.name,
        "kind": member.kind,
        "layer": member.layer,
        "learning_rate": member.learning_rate,
        "seed": member.seed,
        f"selection_{metric}": grid.best_accuracy[index].item(),
        "best_epoch": grid.best_epoch[index].item(),
        "started_epoch": round(started_epoch, 6),
        "stopped_epoch": None if stopped_epoch is None else round(stopped_epoch, 6),
        "epochs_trained": round(end - started_epoch, 6),
        "per_epoch": [{"epoch": e["epoch"], f"selection_{metric}": e[key]} for e in history if key in e],
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

MULTI_LABEL_SUMMARY = ("eval_map", "eval_micro_map", "eval_f1_micro", "eval_f1_macro", "multi_label_threshold")
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
    if is_multi_label(model):
        eval_metrics = {**trainer.evaluate(), "eval_samples": len(eval_dataset), "selection": PAPER_SELECTION_NOTE}
        eval_metrics.update(evaluate_multi_label(trainer.model, args, options.threshold_dataset, eval_dataset))
        eval_metrics["threshold_chosen_on"] = "the training images (evaluation preprocessing)"
    else:  # one final reading gives the figures and the per-image hits of their interval
        output = trainer.predict(eval_dataset, metric_key_prefix="eval")
        trainer.log(output.metrics)  # in the log history, as `Trainer.evaluate` puts it
        hits = per_image_hits(output.predictions, output.label_ids)
        eval_metrics = {**output.metrics, "eval_samples": len(eval_dataset), "selection": PAPER_SELECTION_NOTE}
        eval_metrics.update(image_intervals(hits, options.bootstrap))
    for split, split_metrics in (("train", train_metrics), ("eval", eval_metrics)):
        trainer.log_metrics(split, {k: v for k, v in split_metrics.items() if isinstance(v, (int, float))})
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
    metric = f"eval_{scored_metrics(config)[0]}"
    history = [entry for entry in trainer.state.log_history if metric in entry][:-1]  # minus the final eval
    best = best_epoch(history, metric)
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
        **{key: eval_metrics[key] for key in eval_metrics if key.endswith("_interval") or key == "interval_method"},
        **{key: eval_metrics[key] for key in MULTI_LABEL_SUMMARY if key in eval_metrics},
        "per_epoch": [
            {
                "epoch": e["epoch"],
                **{key: e.get(key) for key in ("eval_accuracy", "eval_top5_accuracy", "eval_map") if key in e},
            }
            for e in history
        ],
        **run_info,
    }
