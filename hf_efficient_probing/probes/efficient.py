"""Efficient Probing (EP): multi-query cross-attention over frozen tokens.

Psomas et al., "Attention, Please! Revisiting Attentive Probing Through the Lens of Efficiency", ICLR 2026.

For tokens ``X`` (N x D) of one image, M learned queries ``Q`` (M x D) and one value projection ``W`` (D/D_o x D)
split row-wise into M blocks ``W_j`` of ``s = D / (D_o * M)`` rows::

    a_j = softmax(q_j X^T / sqrt(D))          # no query or key projection: the keys are the raw tokens
    y_j = a_j X W_j^T                         # query j reads its own slice of the projected values
    y   = [y_1, ..., y_M]                     # concatenated, width D / D_o

Because every ``a_j`` sums to one, ``a_j (X W_j^T) = (a_j X) W_j^T``: the tokens are aggregated first (M x D per
image) and each aggregate is projected by its own block after, so the value projection costs D^2/D_o per image
instead of N D^2/D_o. The result is the same to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import Pooling, PoolingOutput, check_tokens, masked_softmax


def valid_num_queries(hidden_size: int, d_out: int) -> list[int]:
    """The query counts M for which ``hidden_size`` splits evenly into ``d_out * M`` channels."""
    if d_out < 1 or hidden_size % d_out:
        return []
    width = hidden_size // d_out
    return [m for m in range(1, width + 1) if width % m == 0]


class EfficientProbing(Pooling):
    """EP pooling.

    Args:
        hidden_size: token width D.
        num_queries: number of learned queries M (official default 32).
        d_out: output reduction D_o; the pooled feature has width D / D_o (official default 1).
        value_bias: whether the value projection has a bias (the official code has none).

    ``forward(..., uniform_queries=[j, ...])`` replaces those queries' attention by the uniform distribution over the
    (real) tokens: an analysis input, not a training option, that measures what each query contributes (the paper's
    Figure 4, `hf_efficient_probing.analysis.query_analysis`).
    """

    supports_uniform_queries = True

    def __init__(self, hidden_size: int, num_queries: int = 32, d_out: int = 1, value_bias: bool = False):
        super().__init__()
        if num_queries < 1 or d_out < 1 or hidden_size % (d_out * num_queries):
            valid = valid_num_queries(hidden_size, d_out)
            raise ValueError(
                f"EP needs hidden_size divisible by d_out * num_queries; got hidden_size={hidden_size}, "
                f"d_out={d_out}, num_queries={num_queries}. With d_out={d_out} the valid num_queries are "
                f"{valid if valid else 'none (d_out must divide hidden_size)'}."
            )
        self.hidden_size = hidden_size
        self.num_queries = num_queries
        self.d_out = d_out
        self.out_features = hidden_size // d_out
        self.group_size = self.out_features // num_queries
        self.scale = hidden_size**-0.5
        self.queries = nn.Parameter(torch.randn(1, num_queries, hidden_size) * 0.02)
        self.value = nn.Linear(hidden_size, self.out_features, bias=value_bias)

    def attention(
        self, tokens: torch.Tensor, token_mask: torch.Tensor | None = None, uniform_queries: Sequence[int] = ()
    ) -> torch.Tensor:
        """``[B, M, N]`` softmax attention of each query over the (real) tokens; uniform for ``uniform_queries``."""
        logits = torch.matmul(self.queries * self.scale, tokens.transpose(1, 2))
        attn = masked_softmax(logits, token_mask)
        if len(uniform_queries):
            uniform = torch.zeros(self.num_queries, 1, dtype=torch.bool, device=attn.device)
            uniform[list(uniform_queries)] = True
            attn = torch.where(uniform, masked_softmax(torch.zeros_like(logits), token_mask), attn)
        return attn

    def forward(
        self, tokens, num_prefix_tokens=0, grid_size=None, token_mask=None, uniform_queries: Sequence[int] = ()
    ) -> PoolingOutput:
        check_tokens(tokens, self.hidden_size, token_mask)
        attn = self.attention(tokens, token_mask, uniform_queries)  # B, M, N
        aggregated = torch.matmul(attn, tokens)  # B, M, D: aggregate the raw tokens first ...
        weight = self.value.weight.view(self.num_queries, self.group_size, self.hidden_size)
        pooled = torch.einsum("bmd,msd->bms", aggregated, weight)  # ... then project each group by its block
        pooled = pooled.reshape(tokens.shape[0], self.out_features)
        if self.value.bias is not None:
            pooled = pooled + self.value.bias
        return PoolingOutput(pooled=pooled, attentions=attn)

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, num_queries={self.num_queries}, d_out={self.d_out}"
