"""The two training protocols, as values for the recipe fields that the user left unset.

``paper`` is the paper's ImageNet recipe (about 28k optimizer steps at batch 4096): LARS with base lr 0.1 scaled by
batch / 256, 10 warm-up epochs then cosine, 90 epochs. On a data set of a few thousand images it gives a few hundred
steps, which barely move LARS's weights (trust coefficient 0.001). ``default`` is what one tunes instead: AdamW,
a log grid of learning rates trained together (`training.grid`), a short warm-up, and as many epochs as it takes to
reach ``MIN_OPTIMIZER_STEPS`` (within ``EPOCH_RANGE``), with the batch capped so that every epoch has at least
``MIN_STEPS_PER_EPOCH`` steps. In both, the batch never exceeds the training split.
"""

from __future__ import annotations

import copy
import logging
import math

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
            f"The training split has {num_train} images, fewer than one batch of 2 per process ({world_size} "
            "processes): add images, or train on fewer processes."
        )
    if batch < requested:
        logger.info(
            "Batch size %d per device (asked: %d): the training split has %d images.", batch, requested, num_train
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
