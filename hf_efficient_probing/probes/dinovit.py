"""A full DINOv2 ViT block as a pooling (official ``dinovit``): self-attention over all tokens, then the mean.

``Z = X + W_o MHSA(LN_1(X)) + b_o;  Z <- Z + MLP(LN_2(Z));  y = mean_n Z`` -- 8 heads, ``qkv`` without bias,
no LayerScale. The costliest pooling (N^2 attention): nothing folds, every token is transformed.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Pooling, PoolingOutput, check_tokens, masked_mean, masked_softmax
from .cross_attention import FeedForward, _check_heads


class DinoViTBlockPooling(Pooling):
    """One DINOv2 block then the token mean. ``attentions`` ``[B, heads, N]`` is the attention each token receives,
    averaged over the querying tokens (the block's full ``N x N`` maps are not kept)."""

    def __init__(self, hidden_size: int, num_heads: int = 8, mlp_ratio: float = 4.0):
        super().__init__()
        _check_heads(hidden_size, num_heads, "dinovit")
        self.hidden_size, self.num_heads, self.out_features = hidden_size, num_heads, hidden_size
        self.attn_norm = nn.LayerNorm(hidden_size)
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.out_proj = nn.Linear(hidden_size, hidden_size)
        self.mlp_norm = nn.LayerNorm(hidden_size)
        self.mlp = FeedForward(hidden_size, mlp_ratio)

    def forward(self, tokens, num_prefix_tokens=0, grid_size=None, token_mask=None) -> PoolingOutput:
        check_tokens(tokens, self.hidden_size, token_mask)
        batch, num_tokens, _ = tokens.shape
        head_dim = self.hidden_size // self.num_heads
        qkv = self.qkv(self.attn_norm(tokens)).view(batch, num_tokens, 3, self.num_heads, head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each B, H, N, d
        attn = masked_softmax(torch.matmul(query * head_dim**-0.5, key.transpose(-2, -1)), token_mask)
        attended = torch.matmul(attn, value).transpose(1, 2).reshape(batch, num_tokens, self.hidden_size)
        x = tokens + self.out_proj(attended)
        x = x + self.mlp(self.mlp_norm(x))
        if token_mask is None:
            received = attn.mean(dim=2)
        else:  # averaged over the real querying tokens
            querying = token_mask[:, None, :, None].to(attn.dtype)
            received = (attn * querying).sum(dim=2) / querying.sum(dim=2)
        return PoolingOutput(pooled=masked_mean(x, token_mask), attentions=received)
