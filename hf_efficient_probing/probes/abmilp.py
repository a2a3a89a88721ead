"""Attention-based multiple-instance-learning pooling (ABMILP, Ilse et al., 2018) as the official ``abmilp``.

A small MLP scores every token, a softmax over the tokens turns the scores into weights, and the pooled feature
is the weighted sum. The official head optionally runs one single-head self-attention layer (no residual, no
norm) first, and feeds its output to the scorer (``self_attention`` ``"map"``), to the weighted sum as well
(``"both"``, the official default) or to neither (``"none"``)::

    Z = W_o softmax(X W_q^T (X W_k^T)^T / sqrt(D)) X W_v^T + b_o
    a = softmax_n(w^T act(W_1 Z + b_1) + b)        (depth 2; depth 1 is a single linear scorer)
    y = sum_n a_n Z_n

Unlike the official module, this one does not need the backbone's ``patch_embed`` (it works with every backbone),
``content="patch"`` drops the ``num_prefix_tokens`` leading tokens instead of exactly one, and the fixed sin-cos
position embedding of ``cond="pe"`` follows the token grid it is given (so non-square grids work).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Pooling, PoolingOutput, check_tokens, masked_softmax
from .patch_grid import patch_grid

SELF_ATTENTION_MODES = ("none", "map", "both")
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
CONDITIONS = (None, "none", "pe")
CONTENTS = ("all", "patch")


def sincos_position_embedding(hidden_size: int, grid_size: tuple[int, int]) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos embedding, ``[h * w, D]`` for a row-major ``(h, w)`` grid: the first half of the
    channels encodes the column, the second half the row; each half is ``[sin(p w_k), cos(p w_k)]`` with
    ``w_k = 10000^(-k / (D/4))``."""
    if hidden_size % 4:
        raise ValueError(f"The sin-cos position embedding needs hidden_size divisible by 4, got {hidden_size}.")
    height, width = grid_size
    omega = 1.0 / 10000 ** (torch.arange(hidden_size // 4, dtype=torch.float64) / (hidden_size / 4))

    def encode(positions: torch.Tensor) -> torch.Tensor:
        angles = positions.to(torch.float64)[:, None] * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    return torch.cat([encode(cols), encode(rows)], dim=1).float()


class SelfAttention(nn.Module):
    """Single-head self-attention of the official ``models_vit.Attention(dim, num_heads=1)``: ``qkv`` without bias,
    ``proj`` with bias."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        query, key, value = self.qkv(x).chunk(3, dim=-1)
        attn = masked_softmax(torch.matmul(query * x.shape[-1] ** -0.5, key.transpose(1, 2)), token_mask)
        return self.proj(torch.matmul(attn, value))


class ABMILPPooling(Pooling):
    """ABMILP pooling. Defaults are the official command-line defaults (``--abmilp_sa both --abmilp_act tanh
    --abmilp_depth 2 --abmilp_content all``, no position conditioning).

    Args:
        self_attention: ``"none"``, ``"map"`` (self-attention output feeds the scorer) or ``"both"`` (it also is what
            is pooled).
        activation: ``"tanh"`` or ``"relu"`` between the scorer's layers.
        depth: number of linear layers of the scorer (1: a single ``Linear(D, 1)``).
        cond: ``None``/``"none"``, or ``"pe"`` to add the fixed sin-cos position embedding to the scorer's input
            (prefix tokens get a zero embedding).
        content: ``"all"`` pools every token given; ``"patch"`` drops the leading [CLS]/prefix tokens first.
    """

    def __init__(
        self,
        hidden_size: int,
        self_attention: str = "both",
        activation: str = "tanh",
        depth: int = 2,
        cond: str | None = None,
        content: str = "all",
    ):
        super().__init__()
        for name, value, choices in (
            ("self_attention", self_attention, SELF_ATTENTION_MODES),
            ("activation", activation, tuple(ACTIVATIONS)),
            ("cond", cond, CONDITIONS),
            ("content", content, CONTENTS),
        ):
            if value not in choices:
                raise ValueError(f"abmilp {name} must be one of {choices}, got {value!r}.")
        if depth < 1:
            raise ValueError(f"abmilp depth must be at least 1, got {depth}.")
        self.hidden_size = self.out_features = hidden_size
        self.self_attention_mode, self.cond, self.content = self_attention, cond, content
        self.self_attention = SelfAttention(hidden_size) if self_attention != "none" else None
        layers: list[nn.Module] = []
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden_size, hidden_size), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(hidden_size, 1))
        self.scorer = nn.Sequential(*layers)

    def position_embedding(self, num_tokens: int, num_prefix_tokens: int, grid_size) -> torch.Tensor:
        grid_size = patch_grid(num_tokens - num_prefix_tokens, grid_size, "abmilp cond='pe'")
        patches = sincos_position_embedding(self.hidden_size, grid_size)
        return torch.cat([patches.new_zeros(num_prefix_tokens, self.hidden_size), patches])

    def forward(self, tokens, num_prefix_tokens=0, grid_size=None, token_mask=None) -> PoolingOutput:
        check_tokens(tokens, self.hidden_size, token_mask)
        batch, num_tokens, _ = tokens.shape
        skipped = num_prefix_tokens if self.content == "patch" else 0
        x = tokens[:, skipped:]
        mask = token_mask[:, skipped:] if token_mask is not None else None
        attended = self.self_attention(x, mask) if self.self_attention is not None else x
        scorer_input = x if self.self_attention_mode == "none" else attended
        if self.cond == "pe":
            if mask is not None and not bool(mask.all()):
                raise ValueError("abmilp cond='pe' places tokens on the patch grid and cannot read padded tokens.")
            position = self.position_embedding(x.shape[1], num_prefix_tokens - skipped, grid_size)
            scorer_input = scorer_input + position.to(scorer_input)
        weights = masked_softmax(self.scorer(scorer_input).squeeze(-1), mask)  # B, N'
        pooled_from = attended if self.self_attention_mode == "both" else x
        pooled = torch.matmul(weights.unsqueeze(1), pooled_from).squeeze(1)
        attn = weights.new_zeros(batch, 1, num_tokens)
        attn[:, 0, skipped:] = weights
        return PoolingOutput(pooled=pooled, attentions=attn)
