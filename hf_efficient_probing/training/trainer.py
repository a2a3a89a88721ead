"""Training a probe with the `transformers` Trainer: the paper's recipe, best-epoch selection, resume, summary.

:func:`train_probe` is the library entry point (the example script is a thin wrapper around it). It takes prepared
data sets whose items are ``{"pixel_values", "labels"}`` (images through the backbone) or ``{"tokens", "labels"}``
(e.g. from a token cache; the backbone is skipped), so any source of tokens trains through the same path.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field

import evaluate
import numpy as np
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..probes.counting import count_trainable_parameters
from .arguments import ProbingTrainingArguments
from .data import probing_collator
from .grid import ProbingGridModel
from .lora import freeze_lora, has_lora
from .metrics import TOP_K_ACCURACY_PATH
from .optim import (
    MAX_WARMUP_FRACTION,
    build_optimizer,
    optimizer_for_groups,
    scaled_learning_rate,
    warmup_cosine_schedule,
)
from .recipe import resolve_recipe

logger = logging.getLogger(__name__)

SUMMARY_JSON, SUMMARY_MARKDOWN = "run_summary.json", "run_summary.md"
TOP_K = 5


class ProbingTrainer(Trainer):
    """`Trainer` with the paper's optimiser and schedule, and full training batches.

    With ``args.optimizer`` ``"lars"``, ``"sgd"`` or ``"adamw"``, the learning rate is ``base_learning_rate *
    effective batch / 256`` (or ``learning_rate`` when ``base_learning_rate`` is unset), warmed up linearly for
    ``warmup_epochs`` (never more than ``MAX_WARMUP_FRACTION`` of the run) and decayed by a half cosine.
    ``"trainer"`` leaves both to `TrainingArguments`. A `ProbingGridModel` gets one parameter group per member, at
    the member's own learning rate, all scheduled by the same factor. The last incomplete training batch is dropped,
    as in the official code: a BatchNorm cannot train on one image.
    """

    args: ProbingTrainingArguments

    def _uses_recipe(self) -> bool:
        return getattr(self.args, "optimizer", "trainer") != "trainer"

    def peak_learning_rate(self) -> float:
        if getattr(self.args, "base_learning_rate", None) is None:
            return self.args.learning_rate
        effective = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
        return scaled_learning_rate(self.args.base_learning_rate, effective)

    def create_optimizer(self, model=None):
        if not self._uses_recipe():
            return super().create_optimizer(model)
        model = model if model is not None else self.model
        if self.optimizer is None and isinstance(model, ProbingGridModel):
            self.optimizer = optimizer_for_groups(
                model.parameter_groups(weight_decay=self.args.weight_decay),
                self.args.optimizer,
                momentum=self.args.momentum,
                trust_coefficient=self.args.lars_trust_coefficient,
            )
        if self.optimizer is None:
            self.optimizer = build_optimizer(
                model,
                self.args.optimizer,
                self.peak_learning_rate(),
                weight_decay=self.args.weight_decay,
                momentum=self.args.momentum,
                trust_coefficient=self.args.lars_trust_coefficient,
            )
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if not self._uses_recipe():
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            epochs = max(self.args.num_train_epochs, 1e-12)
            fraction = min(self.args.warmup_epochs / epochs, MAX_WARMUP_FRACTION)
            warmup_steps = int(round(num_training_steps * fraction))
            self.lr_scheduler = warmup_cosine_schedule(
                optimizer or self.optimizer, warmup_steps, num_training_steps, self.args.min_lr_ratio
            )
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Checkpoints keep the in-memory parameter names (the Trainer reloads them with a non-strict
        ``load_state_dict``, which would silently skip renamed backbone/LoRA keys) and no pickled arguments."""
        if not self.args.should_save:
            return
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        self.accelerator.unwrap_model(self.model).save_pretrained(
            output_dir, state_dict=state_dict, save_original_format=False
        )

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        target = model if model is not None else self.model
        if isinstance(target, ProbingGridModel):
            target.check_checkpoint(resume_from_checkpoint)
        super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _issue_warnings_after_load(self, load_result) -> None:
        """Probe-only checkpoints hold no backbone weights by design: report only the probe keys that are missing."""
        missing = [key for key in load_result.missing_keys if not key.startswith("backbone.")]
        if isinstance(self.model, ProbingGridModel):
            if missing or load_result.unexpected_keys:
                raise ValueError(
                    f"The checkpoint does not hold this grid (missing {missing[:5]}, unexpected "
                    f"{load_result.unexpected_keys[:5]}): start over in a new --output_dir."
                )
            return
        super()._issue_warnings_after_load(load_result._replace(missing_keys=missing))

    def get_train_dataloader(self):
        drop_last = self.args.dataloader_drop_last
        self.args.dataloader_drop_last = True  # training only: evaluation must see every image
        try:
            return super().get_train_dataloader()
        finally:
            self.args.dataloader_drop_last = drop_last


def rank_top_k(logits, labels=None):
    """Reduce logits to the indices of the ``TOP_K`` best classes before they are gathered across processes."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.topk(min(TOP_K, logits.shape[-1]), dim=-1).indices


def build_compute_metrics():
    """Top-1/top-5 accuracy through the package's offline `evaluate` module (in memory: no cache files, so that
    several processes can compute it at once)."""
    metric = evaluate.load(TOP_K_ACCURACY_PATH, keep_in_memory=True)

    def compute_metrics(prediction) -> dict[str, float]:
        ranked = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return metric.compute(predictions=np.asarray(ranked), references=np.asarray(prediction.label_ids), k=TOP_K)

    return compute_metrics


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest ``checkpoint-<step>`` directory that was fully written (its ``trainer_state.json`` exists: the
    Trainer writes it last), so a run killed while saving resumes from the checkpoint before."""
    if not os.path.isdir(output_dir):
        return None
    pattern = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
    steps = sorted(
        (int(match.group(1)), name)
        for name in os.listdir(output_dir)
        if (match := pattern.match(name)) and os.path.isfile(os.path.join(output_dir, name, "trainer_state.json"))
    )
    return os.path.join(output_dir, steps[-1][1]) if steps else None


def remove_checkpoints(output_dir: str) -> None:
    """Delete the ``checkpoint-*`` folders of a finished run: they only serve resuming, and hold pickles."""
    for name in os.listdir(output_dir):
        if name.startswith(f"{PREFIX_CHECKPOINT_DIR}-"):
            shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)


@dataclass
class ProbingResult:
    """What a probing run produced: final evaluation metrics of the best epoch, and the run summary."""

    metrics: dict[str, float]
    summary: dict
    trainer: ProbingTrainer = field(repr=False)


def train_probe(
    model,
    args: ProbingTrainingArguments,
    train_dataset,
    eval_dataset,
    image_processor=None,
    resume_from_checkpoint: bool | str | None = None,
    callbacks: list[TrainerCallback] | None = None,
    run_info: dict | None = None,
) -> ProbingResult:
    """Train ``model``'s probe, keep the best epoch *on* ``eval_dataset``, save it to ``args.output_dir`` and write the
    results. This is the paper's protocol (its selection is optimistic when ``eval_dataset`` is the reported split);
    ``training.sweep.train_grid`` chooses on a split held out from train instead.

    Args:
        model: a probe model of this library (its backbone frozen unless LoRA is on).
        args: training arguments (unset recipe fields: the paper's recipe; the batch is capped by the split).
        train_dataset, eval_dataset: items ``{"pixel_values" | "tokens", "labels"}``.
        image_processor: saved with the probe, so that ``pipeline`` can use it.
        resume_from_checkpoint: a checkpoint path, ``True`` for the last one, ``False`` to start over; ``None``
            resumes from the last complete checkpoint in ``output_dir`` if there is one (a killed run continues).
        callbacks: extra Trainer callbacks.
        run_info: extra entries for the run summary (data set name, subset sizes, skipped images, ...).

    Writes ``model.safetensors`` + ``config.json`` (loadable with ``from_pretrained``), ``all_results.json``
    (``eval_accuracy``, ``eval_top5_accuracy``, ...), ``run_summary.json`` and ``run_summary.md``.
    """
    start = time.time()
    args = resolve_recipe(args, "paper", len(train_dataset))
    callbacks = list(callbacks or [])
    if getattr(args, "early_stopping_patience", None):
        callbacks.append(EarlyStoppingCallback(args.early_stopping_patience, args.early_stopping_threshold))
    trainer = ProbingTrainer(
        model=model,
        args=args,
        data_collator=probing_collator,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        compute_metrics=build_compute_metrics(),
        preprocess_logits_for_metrics=rank_top_k,
        callbacks=callbacks,
    )
    if resume_from_checkpoint is None:
        resume_from_checkpoint = last_complete_checkpoint(args.output_dir)
        if resume_from_checkpoint:
            logger.info("Resuming from %s", resume_from_checkpoint)
    elif resume_from_checkpoint is False:
        resume_from_checkpoint = None
    train_output = trainer.train(resume_from_checkpoint=resume_from_checkpoint or None)
    train_metrics = dict(train_output.metrics)
    train_metrics["train_samples"] = len(train_dataset)
    eval_metrics = trainer.evaluate()
    eval_metrics["eval_samples"] = len(eval_dataset)
    trainer.log_metrics("train", train_metrics)
    trainer.save_metrics("train", train_metrics)
    trainer.log_metrics("eval", eval_metrics)
    trainer.save_metrics("eval", eval_metrics)
    trainer.save_state()

    summary = run_summary(trainer, eval_metrics, run_info or {}, time.time() - start)
    if trainer.is_world_process_zero():
        save_probe(trainer.model, args.output_dir)
        if image_processor is not None:
            image_processor.save_pretrained(args.output_dir)
        write_summary(summary, args.output_dir)
        if not getattr(args, "keep_checkpoints", True):
            remove_checkpoints(args.output_dir)
    trainer.accelerator.wait_for_everyone()
    return ProbingResult(metrics={**train_metrics, **eval_metrics}, summary=summary, trainer=trainer)


def save_probe(model, output_dir: str) -> None:
    """Save the final probe. A LoRA-tuned backbone is frozen again first: the adapter is then saved beside the probe
    (``backbone_adapter/``, peft's format) and ``from_pretrained`` applies it to the backbone the config names."""
    if has_lora(model):
        freeze_lora(model)
    model.save_pretrained(output_dir)


def best_epoch(log_history: list[dict], metric: str = "eval_accuracy") -> dict | None:
    """The evaluation log entry with the highest ``metric`` (the earliest on ties)."""
    evaluations = [entry for entry in log_history if metric in entry and "epoch" in entry]
    if not evaluations:
        return None
    return max(evaluations, key=lambda entry: entry[metric])


def run_summary(trainer: ProbingTrainer, eval_metrics: dict, run_info: dict, runtime_s: float) -> dict:
    """A JSON-able record of the run: backbone, probe, parameters, best epoch, top-1/top-5."""
    model, args = trainer.model, trainer.args
    config = model.config
    history = [entry for entry in trainer.state.log_history if "eval_accuracy" in entry][:-1]  # minus the final eval
    best = best_epoch(history)
    backbone_config = config.backbone_config
    return {
        "backbone": config.backbone_name_or_path or f"{backbone_config.model_type} built from its config",
        "backbone_revision": config.backbone_revision,
        "backbone_hidden_size": getattr(backbone_config, "hidden_size", None),  # CNNs and timm models have none
        "probe": config.pooling_name,
        "probe_config": {"model_type": config.model_type, **config.pooling_kwargs()},
        "feature_layers": list(config.feature_layers),
        "token_selection": config.token_selection,
        "num_labels": config.num_labels,
        "trainable_parameters": count_trainable_parameters(model),
        "probe_parameters": count_trainable_parameters(model.probe),
        "lora": has_lora(model),
        "optimizer": getattr(args, "optimizer", "trainer"),
        "peak_learning_rate": trainer.peak_learning_rate(),
        "effective_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
        "epochs": args.num_train_epochs,
        "epochs_run": trainer.state.epoch,
        "optimizer_steps": trainer.state.global_step,
        "world_size": args.world_size,
        "seed": args.seed,
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
        "runtime_s": round(runtime_s, 2),
        **run_info,
    }


def write_summary(summary: dict, output_dir: str, markdown=None) -> None:
    """``run_summary.json`` and ``run_summary.md``, rendered by ``markdown`` (a short table by default)."""
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, SUMMARY_JSON), "w") as handle:
        json.dump(summary, handle, indent=2, default=str)
    with open(os.path.join(output_dir, SUMMARY_MARKDOWN), "w") as handle:
        handle.write((markdown or summary_markdown)(summary))


def _percent(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def summary_markdown(summary: dict) -> str:
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
        ("Top-1 accuracy (%)", _percent(summary["eval_accuracy"])),
        ("Top-5 accuracy (%)", _percent(summary["eval_top5_accuracy"])),
    ]
    rows += [(key.replace("_", " ").capitalize(), value) for key, value in summary.items() if key in _EXTRA_ROWS]
    if "token_cache" in summary:
        rows.append(("Token cache", token_cache_markdown(summary["token_cache"])))
    lines = ["# Probing run", "", "| | |", "|---|---|"] + [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines) + "\n"


def token_cache_markdown(report: dict) -> str:
    """How the run got its tokens: an existing cache, or this run's extraction and its speed."""
    dtypes = f"computed in {report['compute_dtype']}, stored in {report['storage_dtype']}"
    if report["reused"]:
        return f"reused an existing cache ({dtypes})"
    return (
        f"{report['images']} images extracted in {report['seconds']:.1f} s ({report['images_per_second']} images/s "
        f"on {report['processes']} process(es), {dtypes})"
    )


_EXTRA_ROWS = (
    "protocol",
    "selection",
    "dataset",
    "train_samples",
    "eval_samples",
    "skipped_unreadable_images",
    "shots_per_class",
    "train_fraction",
)
