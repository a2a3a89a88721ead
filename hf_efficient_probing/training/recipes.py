"""Recipes: the values a protocol gives the training fields a user left unset, and the optimisers and schedule.

``paper`` is the paper's ImageNet recipe (about 28k optimizer steps at batch 4096): LARS with base lr 0.1 scaled by
batch / 256, 10 warm-up epochs then cosine, 90 epochs. On a data set of a few thousand images it gives a few hundred
steps, which barely move LARS's weights (trust coefficient 0.001). ``default`` is what one tunes instead: AdamW,
a log grid of learning rates trained together (`training.grid`), a short warm-up, and as many epochs as it takes to
reach ``MIN_OPTIMIZER_STEPS`` (within ``EPOCH_RANGE``), with the batch capped so that every epoch has at least
``MIN_STEPS_PER_EPOCH`` steps. In both, the batch never exceeds the training split. The warm-up + cosine schedule is
transformers' ``get_cosine_with_min_lr_schedule_with_warmup``; LARS is written here (see :class:`LARS`).

No LARS on PyPI fits: `torchlars` needs a CUDA build and is unmaintained, and timm's ``Lars`` (a large dependency
for one class) divides by ``|g| + wd |w|`` instead of the norm of the decayed update. This one follows the update
rule of the official code (MAE's LARS), written from the formula:

    for a parameter w with ndim > 1:  d = g + wd * w;  d <- d * trust * |w| / |d|   (ratio 1 if |w| or |d| is 0)
    for 1-D parameters (biases, norms): d = g                                       (no decay, no adaptation)
    m <- momentum * m + d;  w <- w - lr * m
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable

import torch
from torch import nn
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from .arguments import ProbingTrainingArguments

logger = logging.getLogger(__name__)

PROTOCOLS = ("default", "paper")
# 8 base learning rates, half a decade apart (3.5 decades), for a batch of REFERENCE_BATCH; see scaled_grid.
DEFAULT_BASE_LEARNING_RATES = (3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
REFERENCE_BATCH = 256
DEFAULT_BATCH_SIZE = 64
MIN_OPTIMIZER_STEPS = 500
EPOCH_RANGE = (10, 100)
MIN_STEPS_PER_EPOCH = 4
DEFAULT_WARMUP_FRACTION = 0.05
# The last blocks of some backbones are specialised by their pretraining task (or a later fine-tune); a block at 3/4
# depth is often better for a new task, so the default grid holds both and the held-out split picks.
DEFAULT_LAYER_DEPTHS = (1.0, 0.75)

PAPER_RECIPE = dict(optimizer="lars", base_learning_rate=0.1, warmup_epochs=10.0, num_train_epochs=90.0)
PAPER_BATCH_SIZE = 256


def default_feature_layers(num_hidden_layers: int) -> list[int]:
    """The default protocol's layer grid, in depth order: the block at 3/4 depth and the last one (once when they
    coincide)."""
    return sorted({max(1, round(depth * num_hidden_layers)) for depth in DEFAULT_LAYER_DEPTHS})


def scaled_grid(base_learning_rates, effective_batch_size: int) -> list[float]:
    """AdamW's learning rates for ``effective_batch_size``: the base rates times ``sqrt(batch / 256)`` (the square-root
    rule suits adaptive optimizers: the gradient noise falls with the square root of the batch)."""
    scale = math.sqrt(effective_batch_size / REFERENCE_BATCH)
    return [float(f"{rate * scale:.3g}") for rate in base_learning_rates]


def fitted_batch_size(requested: int, num_train: int, world_size: int, min_steps_per_epoch: int) -> int:
    """The per-device batch: ``requested``, lowered so that an epoch has ``min_steps_per_epoch`` full batches (the last
    incomplete batch is dropped), and never below 2 (a BatchNorm cannot train on one image)."""
    fitting = num_train // (max(min_steps_per_epoch, 1) * world_size)
    batch = max(2, min(requested, fitting))
    if batch * world_size > num_train:
        raise ValueError(
            f"The training split has {num_train} samples (images, or clips of videos), fewer than one batch of 2 "
            f"per process ({world_size} processes): add samples, or train on fewer processes."
        )
    if batch < requested:
        logger.info(
            "Batch size %d per device (asked: %d): the training split has %d samples.", batch, requested, num_train
        )
    return batch


def resolve_recipe(args: ProbingTrainingArguments, protocol: str, num_train: int) -> ProbingTrainingArguments:
    """A copy of ``args`` with every unset recipe field filled as ``protocol`` says for ``num_train`` training images
    (``optimizer``, ``base_learning_rate``, ``warmup_epochs``, ``num_train_epochs``, ``per_device_train_batch_size``).
    Values that are set are kept, except that the batch is always capped by the training split."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown protocol {protocol!r}; choose one of {PROTOCOLS}.")
    args = copy.copy(args)
    world = args.world_size
    if protocol == "paper":
        for name, value in PAPER_RECIPE.items():
            if getattr(args, name) is None:
                setattr(args, name, value)
        requested = args.per_device_train_batch_size or PAPER_BATCH_SIZE
        args.per_device_train_batch_size = fitted_batch_size(requested, num_train, world, 1)
        return args
    requested = args.per_device_train_batch_size or DEFAULT_BATCH_SIZE
    args.per_device_train_batch_size = fitted_batch_size(requested, num_train, world, MIN_STEPS_PER_EPOCH)
    if args.optimizer is None:
        args.optimizer = "adamw"
    if args.num_train_epochs is None:
        steps_per_epoch = num_train // (args.per_device_train_batch_size * world * args.gradient_accumulation_steps)
        epochs = math.ceil(MIN_OPTIMIZER_STEPS / max(steps_per_epoch, 1))
        args.num_train_epochs = float(min(max(epochs, EPOCH_RANGE[0]), EPOCH_RANGE[1]))
    if args.warmup_epochs is None:
        args.warmup_epochs = DEFAULT_WARMUP_FRACTION * args.num_train_epochs
    return args


CHECKPOINTS_PER_RUN = 10


def grid_arguments(args: ProbingTrainingArguments, num_train: int) -> ProbingTrainingArguments:
    """The default recipe for ``num_train`` images, with what a grid needs: evaluation on the selection split (and a
    log entry) every epoch, a checkpoint every few epochs (about ``CHECKPOINTS_PER_RUN`` per run; the best-epoch
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


def recipe_identity(args: ProbingTrainingArguments) -> dict:
    """The recipe fields that change what a run trains (part of its identity)."""
    names = ("optimizer", "num_train_epochs", "warmup_epochs", "weight_decay", "base_learning_rate", "learning_rate")
    names += ("min_lr_ratio", "momentum", "lars_trust_coefficient", "seed", "max_grad_norm")
    return {**{name: getattr(args, name) for name in names}, "effective_batch_size": effective_batch_size(args)}


def check_resolved(args: ProbingTrainingArguments) -> None:
    """Fail clearly when a training entry point gets arguments whose recipe was never filled in."""
    unset = [
        name for name in ("optimizer", "num_train_epochs", "per_device_train_batch_size") if getattr(args, name) is None
    ]
    if unset:
        raise ValueError(
            f"The training arguments leave {unset} unset: fill the recipe first with "
            "training.recipes.grid_arguments(args, len(train)) (a grid) or resolve_recipe(args, 'paper', len(train)) "
            "(one probe), or set them."
        )


def effective_batch_size(args: ProbingTrainingArguments) -> int:
    """Images per optimizer step, over every process: the one place the product is written."""
    return args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size


def scaled_learning_rate(base_learning_rate: float, effective_batch: int) -> float:
    """The linear scaling rule of the paper (and MAE): ``base_lr * effective_batch / 256``."""
    return base_learning_rate * effective_batch / REFERENCE_BATCH


def peak_learning_rate(args: ProbingTrainingArguments) -> float:
    """The single probe's peak learning rate: ``base_learning_rate`` scaled by the batch, else ``learning_rate``."""
    if args.base_learning_rate is None:
        return args.learning_rate
    return scaled_learning_rate(args.base_learning_rate, effective_batch_size(args))


MAX_WARMUP_FRACTION = 0.2  # a warm-up longer than a fifth of the run leaves too little at the peak rate


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer,
    warmup_epochs: float,
    epochs: float,
    total_steps: int,
    min_lr_ratio: float = 0.0,
    first_step: Callable[[int], int] | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_epochs`` of the ``epochs`` (never more than ``MAX_WARMUP_FRACTION`` of the run),
    then a half cosine to ``min_lr_ratio`` times the peak at ``total_steps``, updated every step: transformers'
    schedule, applied to every parameter group (each at its own peak rate).

    ``first_step(i)``, read at every step, is the step parameter group ``i`` starts after (0: the run's start; -1:
    not started, learning rate 0): a group that starts late gets the whole schedule compressed into the steps left
    (a member a grid adds at a rung, `training.rungs`)."""
    fraction = min(warmup_epochs / max(epochs, 1e-12), MAX_WARMUP_FRACTION)
    warmup_steps = int(round(total_steps * fraction))
    schedule = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, warmup_steps, total_steps, min_lr_rate=min_lr_ratio
    )
    if first_step is not None:
        whole = schedule.lr_lambdas[0]
        schedule.lr_lambdas = [
            _from_first_step(whole, first_step, group, total_steps) for group in range(len(optimizer.param_groups))
        ]
    return schedule


def _from_first_step(whole: Callable[[float], float], first_step: Callable[[int], int], group: int, total_steps: int):
    """The factor of ``group``: ``whole`` from its first step on, stretched over the steps left (a plain function:
    the scheduler's saved state then holds none of it, and the first step is read from the model on resume)."""

    def factor(step: int) -> float:
        first = first_step(group)
        if first == 0:
            return whole(step)
        if first < 0 or step <= first:
            return 0.0
        return whole(total_steps * (step - first) / (total_steps - first))

    return factor


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling (You et al., 2017) with momentum, as in the official EP code.

    Args:
        params: parameters or parameter groups. Parameters with ``ndim <= 1`` get neither weight decay nor the trust
            ratio; the others get both.
        lr: learning rate.
        weight_decay: L2 decay added to the gradient before the trust ratio (official default 0).
        momentum: heavy-ball momentum (0.9).
        trust_coefficient: the LARS trust coefficient (0.001).
    """

    def __init__(
        self,
        params,
        lr: float = 0.0,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        trust_coefficient: float = 0.001,
    ):
        if lr < 0 or weight_decay < 0 or not 0 <= momentum < 1 or trust_coefficient <= 0:
            raise ValueError(
                f"Invalid LARS settings lr={lr}, weight_decay={weight_decay}, momentum={momentum}, "
                f"trust_coefficient={trust_coefficient}: need lr >= 0, weight_decay >= 0, 0 <= momentum < 1, trust > 0."
            )
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                update = param.grad
                if param.ndim > 1:
                    update = update.add(param, alpha=group["weight_decay"])
                    param_norm, update_norm = torch.linalg.vector_norm(param), torch.linalg.vector_norm(update)
                    ratio = torch.where(
                        (param_norm > 0) & (update_norm > 0),
                        group["trust_coefficient"] * param_norm / update_norm,
                        torch.ones_like(param_norm),
                    )
                    update = update.mul(ratio)
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(param)
                buffer = state["momentum_buffer"]
                buffer.mul_(group["momentum"]).add_(update)
                param.add_(buffer, alpha=-group["lr"])
        return loss


def build_optimizer(
    model: nn.Module,
    name: str,
    learning_rate: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    trust_coefficient: float = 0.001,
) -> torch.optim.Optimizer:
    """``"lars"`` (the paper's), ``"sgd"`` or ``"adamw"`` over the trainable parameters; 1-D parameters never decay."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("The model has no trainable parameters: is the probe frozen?")
    groups = [
        {"params": [p for p in trainable if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0},
    ]
    groups = [group for group in groups if group["params"]]
    return optimizer_for_groups(groups, name, learning_rate, momentum=momentum, trust_coefficient=trust_coefficient)


def optimizer_for_groups(
    groups: list[dict], name: str, learning_rate: float = 0.0, momentum: float = 0.9, trust_coefficient: float = 0.001
) -> torch.optim.Optimizer:
    """``"lars"``, ``"sgd"`` or ``"adamw"`` over parameter groups (a group's own ``lr`` wins over ``learning_rate``)."""
    if name == "lars":
        return LARS(groups, lr=learning_rate, momentum=momentum, trust_coefficient=trust_coefficient)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=learning_rate, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=learning_rate, fused=_fused_adamw_supported(groups) or None)
    raise ValueError(f"Unknown optimizer {name!r}; choose 'lars', 'sgd' or 'adamw'.")


def _fused_adamw_supported(groups: list[dict]) -> bool:
    """Whether every parameter is a plain float tensor on CPU or CUDA, where AdamW's fused kernel runs: one pass
    over each group instead of a chain of per-tensor ops (4x less optimizer time for a grid of probes on a CPU)."""
    params = [p for group in groups for p in group["params"]]
    return all(type(p) is nn.Parameter and p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
