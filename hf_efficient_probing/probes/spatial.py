"""Poolings over the 2-D patch grid: DOLG's spatial attention (official ``dolg``) and CBAM (official ``cbam``).

The official modules reshape the tokens to a square ``sqrt(N) x sqrt(N)`` map, so they fail with a [CLS] token,
with register tokens or with non-square images. These take the grid from ``grid_size`` (a square one is inferred
when it is not given) and skip the ``num_prefix_tokens`` leading tokens, which therefore get zero attention. On the
space-time tokens of a video clip (grid ``(frames, rows, columns)``), DOLG's 1x1 convolutions read every token as
they read an image's, and CBAM's spatial attention runs on each frame's map.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import Pooling, PoolingOutput, check_tokens, masked_batch_norm, masked_mean, refuse_padding
from .patch_grid import patch_tokens_and_grid


def _pad_prefix(attention: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
    """``[B, Q, N_patches] -> [B, Q, N]`` with zero attention on the prefix tokens."""
    return F.pad(attention, (num_prefix_tokens, 0))


class DOLGPooling(Pooling):
    """DOLG's local branch spatial attention (Yang et al., 2021), ``SpatialAttention2d`` without ASPP::

        F = BN(W_1 X + b_1);  s_n = softplus(w_2^T ReLU(F_n) + b_2);  y = mean_n s_n F_n / ||F_n||

    Every convolution is 1x1, so it runs on the tokens directly (the grid only sets which tokens are patches); the
    2-D BatchNorm's statistics are over all B x N patch tokens, as in the official module. ``attentions`` are the
    softplus scores ``s`` (not normalised).
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.hidden_size = self.out_features = hidden_size
        self.conv1 = nn.Linear(hidden_size, hidden_size)
        self.norm = nn.BatchNorm1d(hidden_size, eps=1e-5, momentum=0.1)
        self.conv2 = nn.Linear(hidden_size, 1)
        for conv in (self.conv1, self.conv2):  # ResNet-style init of the official 1x1 convs (std sqrt(2 / fan_out))
            nn.init.normal_(conv.weight, std=math.sqrt(2.0 / conv.out_features))

    def forward(self, tokens, num_prefix_tokens=0, grid_size=None, token_mask=None) -> PoolingOutput:
        check_tokens(tokens, self.hidden_size, token_mask)
        mask = token_mask[:, num_prefix_tokens:] if token_mask is not None else None
        patches = tokens[:, num_prefix_tokens:]
        if mask is None:
            patches, _ = patch_tokens_and_grid(tokens, num_prefix_tokens, grid_size, "dolg", frames=True)
        features = masked_batch_norm(self.norm, self.conv1(patches), mask)  # B, N, D
        scores = F.softplus(self.conv2(features.relu()))  # B, N, 1
        pooled = masked_mean(scores * F.normalize(features, dim=-1), mask)
        return PoolingOutput(pooled=pooled, attentions=_pad_prefix(scores.transpose(1, 2), num_prefix_tokens))


class CBAMPooling(Pooling):
    """CBAM (Woo et al., 2018) as a pooling, timm's ``CbamModule`` plus residual, ReLU and average pooling::

        X1 = X * sigmoid(MLP(avg_n X) + MLP(max_n X))                  # channel attention, MLP D -> D/16 -> D
        X2 = X1 * sigmoid(BN(Conv7x7([mean_c X1; max_c X1])))          # spatial attention on the (h, w) grid
        y  = mean_n ReLU(X2 + X)

    ``attentions`` ``[B, 1, N]`` is the spatial gate. A video clip's tokens get one channel gate for the clip and
    the spatial gate of each of its frames (the 7x7 convolution runs on every frame's map).

    Args:
        kernel_size: size of the spatial convolution (7 officially).
        reduction: channel reduction of the MLP (16: 48 hidden units at D=768).
    """

    def __init__(self, hidden_size: int, kernel_size: int = 7, reduction: int = 16):
        super().__init__()
        self.hidden_size = self.out_features = hidden_size
        hidden = max(1, int(hidden_size / reduction + 0.5))
        self.channel_fc1 = nn.Linear(hidden_size, hidden, bias=False)
        self.channel_fc2 = nn.Linear(hidden, hidden_size, bias=False)
        self.spatial_conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.spatial_norm = nn.BatchNorm2d(1)

    def forward(self, tokens, num_prefix_tokens=0, grid_size=None, token_mask=None) -> PoolingOutput:
        check_tokens(tokens, self.hidden_size, token_mask)
        refuse_padding(token_mask, "cbam")
        patches, (frames, height, width) = patch_tokens_and_grid(
            tokens, num_prefix_tokens, grid_size, "cbam", frames=True
        )

        def channel_mlp(x: torch.Tensor) -> torch.Tensor:
            return self.channel_fc2(self.channel_fc1(x).relu())

        channel_gate = torch.sigmoid(channel_mlp(patches.mean(dim=1)) + channel_mlp(patches.amax(dim=1)))
        x = patches * channel_gate.unsqueeze(1)  # B, N, D
        summary = torch.stack([x.mean(dim=-1), x.amax(dim=-1)], dim=1)  # B, 2, N, frame after frame
        summary = summary.view(-1, 2, frames, height * width).transpose(1, 2).reshape(-1, 2, height, width)
        spatial_gate = torch.sigmoid(self.spatial_norm(self.spatial_conv(summary))).view(-1, frames * height * width)
        pooled = F.relu(x * spatial_gate.unsqueeze(-1) + patches).mean(dim=1)
        return PoolingOutput(pooled=pooled, attentions=_pad_prefix(spatial_gate.unsqueeze(1), num_prefix_tokens))
