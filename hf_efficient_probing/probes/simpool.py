"""SimPool (Psomas et al., ICCV 2023) and its projection-free variant, as the official ``simpool``/``esimpool``.

SimPool attends from the global average of the tokens over the layer-normalised tokens. The official modules
allocate CUDA constants in ``__init__`` and ``squeeze()`` their output (so they fail on CPU and at batch size one);
these ones do neither. Their ``gamma=None`` default (no power mean) is the one the paper compares.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Pooling, PoolingOutput, check_tokens, masked_mean, masked_softmax


class SimPool(Pooling):
    """SimPool with query and key projections (official ``simpool``: one head, no biases)::

        q = W_q mean_n(X);  K = V = LN(X);  a = softmax(q . W_k K^T / sqrt(D));  y = a V

    The query is the mean of the *raw* tokens; the values are the normalised tokens, unprojected. The two
    projections fold into one vector per image, ``W_k^T W_q mean_n(X)``, so no token is projected.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.hidden_size = self.out_features = hidden_size
        self.norm = nn.LayerNorm(hidden_size, eps=1e-6)
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, tokens, num_prefix_tokens=0, grid_size=None, token_mask=None) -> PoolingOutput:
        check_tokens(tokens, self.hidden_size, token_mask)
        normed = self.norm(tokens)
        query = self.q_proj(masked_mean(tokens, token_mask)) @ self.k_proj.weight  # B, D: the query in token space
        logits = torch.matmul(normed, query.unsqueeze(-1)).squeeze(-1).mul(self.hidden_size**-0.5)
        attn = masked_softmax(logits, token_mask)
        pooled = torch.matmul(attn.unsqueeze(1), normed).squeeze(1)
        return PoolingOutput(pooled=pooled, attentions=attn.unsqueeze(1))


class EfficientSimPool(Pooling):
    """SimPool without projections (official ``esimpool``, ``SimPool_nolinears``): only the LayerNorm is learned::

        q = LN(mean_n X);  K = LN(X);  V = X;  y = concat_h softmax(q_h K_h^T / sqrt(d)) V_h

    Args:
        num_heads: 12 as in the official code; the token width must be divisible by it.
    """

    def __init__(self, hidden_size: int, num_heads: int = 12):
        super().__init__()
        if num_heads < 1 or hidden_size % num_heads:
            raise ValueError(f"esimpool needs hidden_size divisible by num_heads; got {hidden_size} and {num_heads}.")
        self.hidden_size = self.out_features = hidden_size
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(hidden_size, eps=1e-6)

    def forward(self, tokens, num_prefix_tokens=0, grid_size=None, token_mask=None) -> PoolingOutput:
        check_tokens(tokens, self.hidden_size, token_mask)
        batch, num_tokens, _ = tokens.shape
        head_dim = self.hidden_size // self.num_heads
        query = self.norm(masked_mean(tokens, token_mask)).view(batch, self.num_heads, 1, head_dim)
        keys = self.norm(tokens).view(batch, num_tokens, self.num_heads, head_dim).transpose(1, 2)
        values = tokens.view(batch, num_tokens, self.num_heads, head_dim).transpose(1, 2)
        attn = masked_softmax(torch.matmul(query * head_dim**-0.5, keys.transpose(-2, -1)), token_mask)  # B, H, 1, N
        pooled = torch.matmul(attn, values).reshape(batch, self.hidden_size)
        return PoolingOutput(pooled=pooled, attentions=attn.squeeze(2))


__all__ = ["EfficientSimPool", "SimPool"]
