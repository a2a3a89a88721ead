"""The paper's optimiser: LARS with momentum, and the learning-rate rule ``lr = base_lr * effective_batch / 256``.

No LARS on PyPI fits: `torchlars` needs a CUDA build and is unmaintained, and timm's ``Lars`` (a large dependency
for one class) divides by ``|g| + wd |w|`` instead of the norm of the decayed update. This one follows the update
rule of the official code (MAE's LARS), written from the formula:

    for a parameter w with ndim > 1:  d = g + wd * w;  d <- d * trust * |w| / |d|   (ratio 1 if |w| or |d| is 0)
    for 1-D parameters (biases, norms): d = g                                       (no decay, no adaptation)
    m <- momentum * m + d;  w <- w - lr * m
"""

from __future__ import annotations

import math

import torch
from torch import nn


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


def scaled_learning_rate(base_learning_rate: float, effective_batch_size: int) -> float:
    """The linear scaling rule of the paper (and MAE): ``base_lr * effective_batch / 256``."""
    return base_learning_rate * effective_batch_size / 256


MAX_WARMUP_FRACTION = 0.2  # a warm-up longer than a fifth of the run leaves too little at the peak rate


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


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 over ``warmup_steps``, then a half-cycle cosine to ``min_lr_ratio * lr`` at
    ``total_steps``, updated every step (the official schedule, per iteration)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
