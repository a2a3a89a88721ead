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
        attn = _attend(self.queries * self.scale, tokens, token_mask)
        if len(uniform_queries):
            uniform = torch.zeros(self.num_queries, 1, dtype=torch.bool, device=attn.device)
            uniform[list(uniform_queries)] = True
            attn = torch.where(uniform, masked_softmax(torch.zeros_like(attn), token_mask), attn)
        return attn

    def value_blocks(self) -> torch.Tensor:
        """The value projection as ``[M, s, D]``: block ``j`` projects query ``j``'s aggregate."""
        return self.value.weight.view(self.num_queries, self.group_size, self.hidden_size)

    def forward(
        self, tokens, num_prefix_tokens=0, grid_size=None, token_mask=None, uniform_queries: Sequence[int] = ()
    ) -> PoolingOutput:
        check_tokens(tokens, self.hidden_size, token_mask)
        attn = self.attention(tokens, token_mask, uniform_queries)  # B, M, N
        return self._output(attn, _aggregate_and_project(attn, tokens, self.value_blocks()))

    @classmethod
    def pool_together(cls, poolings, tokens, num_prefix_tokens=0, grid_size=None, token_mask=None):
        """K EPs of one width and group size are one EP with their queries and value blocks side by side (each query
        still reads its own block): one attention and one aggregation of K*M queries instead of K small ones."""
        if len({(p.hidden_size, p.group_size, p.value.bias is None) for p in poolings}) > 1:
            return super().pool_together(poolings, tokens, num_prefix_tokens, grid_size, token_mask)
        first = poolings[0]
        check_tokens(tokens, first.hidden_size, token_mask)
        queries = torch.cat([pooling.queries for pooling in poolings], dim=1) * first.scale
        attn = _attend(queries, tokens, token_mask)
        pooled = _aggregate_and_project(attn, tokens, torch.cat([pooling.value_blocks() for pooling in poolings]))
        sizes = [pooling.num_queries for pooling in poolings]
        return [
            pooling._output(a, p)
            for pooling, a, p in zip(poolings, attn.split(sizes, dim=1), pooled.split(sizes, dim=1), strict=True)
        ]

    def _output(self, attn: torch.Tensor, pooled: torch.Tensor) -> PoolingOutput:
        """``pooled`` ``[B, M, s]`` (each query's projected aggregate) concatenated to ``[B, D / D_o]``."""
        pooled = pooled.reshape(pooled.shape[0], self.out_features)
        if self.value.bias is not None:
            pooled = pooled + self.value.bias
        return PoolingOutput(pooled=pooled, attentions=attn)

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, num_queries={self.num_queries}, d_out={self.d_out}"


def _attend(scaled_queries: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
    """``[B, M, N]``: each of the ``[1, M, D]`` (scaled) queries' softmax over the raw tokens (no key projection)."""
    return masked_softmax(torch.matmul(scaled_queries, tokens.transpose(1, 2)), token_mask)


def _aggregate_and_project(attn: torch.Tensor, tokens: torch.Tensor, value_blocks: torch.Tensor) -> torch.Tensor:
    """``[B, M, s]``: the tokens aggregated first (``[B, M, D]``), then each aggregate projected by its own block."""
    return torch.einsum("bmd,msd->bms", torch.matmul(attn, tokens), value_blocks)
