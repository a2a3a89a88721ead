"""CLIP's ResNet attention pooling over the 2-D grid, as timm's ``AttentionPool2d`` in the official ``clip``.

The tokens are layer-normalised; their mean is prepended as a query token; a learned absolute position embedding
is added to all ``N + 1``; then one multi-head attention layer runs and its output at the mean token is kept::

    S = [mean_n LN(X); LN(X)] + P;  y = W_o concat_h softmax(W_q,h S_0 . W_k,h S^T / sqrt(d)) (S W_v,h^T + b_v) + b_o

The official module computes all ``N + 1`` outputs and keeps one; only that one is computed here, with the key and
value projections folded (see :mod:`.cross_attention`). The official position embedding is fixed to a 14 x 14 grid
(``N == 196`` only); here it is learned for ``native_grid`` (14 x 14 by default, so the parameters and state dict
match the official ones) and bicubically interpolated to any other ``grid_size``, as CLIP and timm do for other
resolutions. The leading ``num_prefix_tokens`` tokens are skipped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Pooling, PoolingOutput, check_tokens, refuse_padding
from .cross_attention import _check_heads, folded_cross_attention
from .patch_grid import as_pair, patch_tokens_and_grid
from .spatial import _pad_prefix


class CLIPAttentionPooling(Pooling):
    """Args:
    num_heads: 4 as in the official code.
    native_grid: grid the position embedding is learned for: ``14`` (ViT-B/16 at 224), or ``16`` for CAPI.
    """

    def __init__(self, hidden_size: int, num_heads: int = 4, native_grid: int | tuple[int, int] = 14):
        super().__init__()
        _check_heads(hidden_size, num_heads, "clip")
        self.hidden_size, self.num_heads, self.out_features = hidden_size, num_heads, hidden_size
        self.native_grid = as_pair(native_grid)
        self.norm = nn.LayerNorm(hidden_size, eps=1e-6)
        self.position_embedding = nn.Parameter(torch.empty(self.native_grid[0] * self.native_grid[1] + 1, hidden_size))
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)
        nn.init.trunc_normal_(self.position_embedding, std=hidden_size**-0.5)
        nn.init.trunc_normal_(self.qkv.weight, std=hidden_size**-0.5)
        nn.init.zeros_(self.qkv.bias)

    def position_embedding_for(self, grid_size: tuple[int, int]) -> torch.Tensor:
        """``[h * w + 1, D]``: the learned embedding, bicubically resized when the grid is not the native one."""
        if tuple(grid_size) == self.native_grid:
            return self.position_embedding
        first, spatial = self.position_embedding[:1], self.position_embedding[1:]
        spatial = spatial.T.reshape(1, self.hidden_size, *self.native_grid)
        spatial = F.interpolate(spatial, size=tuple(grid_size), mode="bicubic", align_corners=False)
        return torch.cat([first, spatial.reshape(self.hidden_size, -1).T])

    def forward(self, tokens, num_prefix_tokens=0, grid_size=None, token_mask=None) -> PoolingOutput:
        check_tokens(tokens, self.hidden_size, token_mask)
        refuse_padding(token_mask, "clip")
        patches, grid = patch_tokens_and_grid(tokens, num_prefix_tokens, grid_size, "clip")
        normed = self.norm(patches)
        sequence = torch.cat([normed.mean(dim=1, keepdim=True), normed], dim=1) + self.position_embedding_for(grid)
        head_dim = self.hidden_size // self.num_heads
        q_weight, k_weight, v_weight = self.qkv.weight.chunk(3)
        q_bias, _, v_bias = self.qkv.bias.chunk(3)
        queries = F.linear(sequence[:, 0], q_weight, q_bias).view(-1, self.num_heads, head_dim)
        out, attn = folded_cross_attention(queries, k_weight, sequence, v_weight, v_bias, sequence, head_dim**-0.5)
        return PoolingOutput(pooled=self.out_proj(out), attentions=_pad_prefix(attn[:, :, 1:], num_prefix_tokens))
