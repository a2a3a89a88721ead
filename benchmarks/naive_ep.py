"""EP computed in the naive order, for the benchmark only: the value projection runs on every token.

``y_j = a_j (X W_j^T)`` projects all N tokens (N D^2 / D_o multiply-adds per image) before the attention averages
them; the library's order, ``(a_j X) W_j^T``, projects M aggregated vectors instead. Same result, same parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from hf_efficient_probing.probes import EfficientProbing


class NaiveOrderEP(nn.Module):
    """Shares the parameters of an :class:`EfficientProbing` and evaluates it project-first."""

    def __init__(self, ep: EfficientProbing):
        super().__init__()
        self.ep = ep

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        ep = self.ep
        attn = ep.attention(tokens)  # B, M, N
        values = ep.value(tokens)  # B, N, D/D_o: every token projected
        values = values.view(*values.shape[:2], ep.num_queries, ep.group_size)  # B, N, M, s
        pooled = torch.einsum("bmn,bnms->bms", attn, values)  # query j averages its own slice
        return pooled.reshape(tokens.shape[0], ep.out_features)
