"""The one `Trainer` of the package: :class:`ProbingTrainer`, built in one place (:func:`build_trainer`).

A single probe (the paper's protocol) and a grid of probes (the default protocol) train through the same class: the
recipe's optimiser and schedule (`training.recipes`), full training batches, probe-only checkpoints without pickled
arguments that record the run's identity (`training.resume`), and top-1/top-5 metrics through the package's offline
`evaluate` module (a multi-label data set's probes: mean average precision, `evaluation.multilabel`). A grid evaluates on the selection split under the ``selection_`` prefix; a single probe reports
``eval_``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import evaluate
import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from ..evaluation.metrics import TOP_K_ACCURACY_PATH
from ..evaluation.multilabel import multi_label_scores
from .arguments import ProbingTrainingArguments
from .multilabel import MULTI_LABEL_METRICS, MULTI_LABEL_PROBLEM
from .prepared import probing_collator
from .recipes import build_optimizer, optimizer_for_groups, peak_learning_rate, warmup_cosine_schedule
from .reporting import TOP_K
from .resume import rotate_checkpoints, write_identity


class ProbingTrainer(Trainer):
    """`Trainer` with the recipe's optimiser and schedule, and full training batches.

    With ``args.optimizer`` ``"lars"``, ``"sgd"`` or ``"adamw"``, a single probe's learning rate is
    `recipes.peak_learning_rate`; a model with ``parameter_groups()`` (a `ProbingGridModel`) gets one group per member
    at the member's own rate. Both are warmed up for ``warmup_epochs`` and decayed by a half cosine.
    ``"trainer"`` leaves both to `TrainingArguments`. The last incomplete training batch is dropped, as in the
    official code: a BatchNorm cannot train on one image. ``metric_prefix`` names the periodic evaluation's figures
    (``"selection"`` when it reads the split held out from train). ``run_identity`` is recorded in every checkpoint.
    """

    args: ProbingTrainingArguments

    def __init__(self, *args, metric_prefix: str = "eval", run_identity: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.metric_prefix, self.run_identity = metric_prefix, run_identity

    def _uses_recipe(self) -> bool:
        return getattr(self.args, "optimizer", "trainer") != "trainer"

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str | None = None):
        return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix or self.metric_prefix)

    def create_optimizer(self, model=None):
        if not self._uses_recipe():
            return super().create_optimizer(model)
        model = model if model is not None else self.model
        if self.optimizer is None:
            settings = dict(momentum=self.args.momentum, trust_coefficient=self.args.lars_trust_coefficient)
            if hasattr(model, "parameter_groups"):
                groups = model.parameter_groups(weight_decay=self.args.weight_decay)
                self.optimizer = optimizer_for_groups(groups, self.args.optimizer, **settings)
            else:
                rate = peak_learning_rate(self.args)
                self.optimizer = build_optimizer(
                    model, self.args.optimizer, rate, weight_decay=self.args.weight_decay, **settings
                )
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if not self._uses_recipe():
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            self.lr_scheduler = warmup_cosine_schedule(
                optimizer or self.optimizer,
                self.args.warmup_epochs,
                self.args.num_train_epochs,
                num_training_steps,
                self.args.min_lr_ratio,
                first_step=getattr(self.model, "first_step", None),  # a grid's members may start late
            )
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Checkpoints keep the in-memory parameter names (the Trainer reloads them with a non-strict
        ``load_state_dict``, which would silently skip renamed backbone/LoRA keys), no pickled arguments, and the
        run's identity."""
        if not self.args.should_save:
            return
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        self.accelerator.unwrap_model(self.model).save_pretrained(
            output_dir, state_dict=state_dict, save_original_format=False
        )
        if self.run_identity is not None:
            write_identity(output_dir, self.run_identity)

    def _save_checkpoint(self, model, trial) -> None:
        """The Trainer's checkpoint, then the rotation of the library's own checkpoints only: a ``checkpoint-*``
        folder the library did not write is never deleted (the Trainer's rotation would delete any)."""
        limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        if self.args.should_save:
            rotate_checkpoints(self.args.output_dir, limit, self.state.best_model_checkpoint)

    def _issue_warnings_after_load(self, load_result) -> None:
        """A checkpoint must hold exactly this run's probe tensors: a missing or unexpected probe key is an error,
        not a warning (probe-only checkpoints hold no backbone weights by design)."""
        missing = [key for key in load_result.missing_keys if not key.startswith("backbone.")]
        if missing or load_result.unexpected_keys:
            raise ValueError(
                f"The checkpoint does not hold this run's probes (missing {missing[:5]}, unexpected "
                f"{load_result.unexpected_keys[:5]}): start over with --overwrite_output_dir, or use a new --output_dir."
            )

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


def top_k_metrics(names: Callable[[], Sequence[str]] | None = None):
    """Top-1/top-5 accuracy through the package's offline `evaluate` module (in memory: no cache files, so several
    processes can compute it at once). With ``names`` (a grid's members scored by this evaluation, read when it
    ends), predictions are ``[N, K, 5]`` and one call scores those K members (``<name>_accuracy``,
    ``<name>_top5_accuracy``); without, one probe (``accuracy``, ...)."""
    metric = evaluate.load(TOP_K_ACCURACY_PATH, keep_in_memory=True)

    def compute_metrics(prediction) -> dict[str, float]:
        ranked = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        ranked, labels = np.asarray(ranked), np.asarray(prediction.label_ids)
        if names is None:
            return metric.compute(predictions=ranked, references=labels, k=TOP_K)
        scored = names()
        scores = metric.compute(
            predictions=ranked.reshape(-1, ranked.shape[-1]),
            references=np.repeat(labels, len(scored)),
            k=TOP_K,
            num_probes=len(scored),
        )
        return {f"{name}_{key}": values[index] for key, values in scores.items() for index, name in enumerate(scored)}

    return compute_metrics


def multi_label_metrics(names: Callable[[], Sequence[str]] | None = None):
    """Macro and micro mean average precision (``map``, ``micro_map``) of multi-label logits, per grid member
    (``<name>_map``, ...; predictions ``[N, K, C]``) with ``names``, of one probe (``[N, C]``) without. No threshold
    is involved: the one F1 needs is chosen after training, on the selection split (`training.engine`)."""

    def compute_metrics(prediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        logits, labels = torch.as_tensor(np.asarray(logits)), torch.as_tensor(np.asarray(prediction.label_ids))
        if names is None:
            scores = multi_label_scores(logits, labels)
            return {key: scores[key] for key in MULTI_LABEL_METRICS}
        results = {}
        for index, name in enumerate(names()):
            scores = multi_label_scores(logits[:, index], labels)
            results.update({f"{name}_{key}": scores[key] for key in MULTI_LABEL_METRICS})
        return results

    return compute_metrics


def is_multi_label(model) -> bool:
    """Whether ``model`` (a probe, or a grid of probes: they share one label set) scores each class on its own."""
    config = model.member_config(0) if hasattr(model, "member_config") else model.config
    return getattr(config, "problem_type", None) == MULTI_LABEL_PROBLEM


def build_trainer(
    model,
    args: ProbingTrainingArguments,
    datasets: tuple,
    metric_names: Callable[[], Sequence[str]] | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    run_identity: dict | None = None,
) -> ProbingTrainer:
    """The one construction of the package's trainer. ``datasets`` is ``(train, evaluated every epoch)`` (either may
    be ``None``); ``metric_names`` gives the grid members each periodic evaluation scores (those training then), on
    the selection split."""
    train_dataset, eval_dataset = datasets
    multi_label = is_multi_label(model)
    return ProbingTrainer(
        model=model,
        args=args,
        data_collator=probing_collator,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        compute_metrics=(multi_label_metrics if multi_label else top_k_metrics)(metric_names),
        preprocess_logits_for_metrics=None if multi_label else rank_top_k,  # multi-label: every class's logit
        callbacks=list(callbacks),
        metric_prefix="selection" if metric_names is not None else "eval",
        run_identity=run_identity,
    )
