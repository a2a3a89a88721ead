"""The layout of a stream of tokens, and each probe's view of it.

A cache or a live stream holds every layer any of its probes reads, concatenated along channels, with the [CLS]
token first when some probe reads it. A probe takes its own layers' channel blocks, in its own order, and drops the
[CLS] token if it reads patches only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..backbones import normalize_layers


@dataclass(frozen=True)
class TokenLayout:
    """What a stream's tokens hold: hidden states ``feature_layers`` (non-negative, in channel order, each
    ``hidden_size`` wide), led by a [CLS] token when ``num_prefix_tokens`` is 1."""

    feature_layers: tuple[int, ...]
    hidden_size: int
    num_prefix_tokens: int
    num_hidden_layers: int

    def view_index(self, feature_layers: Sequence[int]) -> slice | torch.Tensor | None:
        """Channels of ``feature_layers`` in this layout: ``None`` for all of them as stored, a ``slice`` when they
        are one contiguous run in order (a view, no copy), else an index tensor."""
        wanted = normalize_layers(feature_layers, self.num_hidden_layers)
        if wanted == self.feature_layers:
            return None
        missing = [layer for layer in wanted if layer not in self.feature_layers]
        if missing:
            raise ValueError(
                f"The tokens hold layers {list(self.feature_layers)}, not {missing}: read (or cache) those layers too."
            )
        width = self.hidden_size
        positions = [self.feature_layers.index(layer) for layer in wanted]
        if positions == list(range(positions[0], positions[0] + len(positions))):
            return slice(positions[0] * width, (positions[-1] + 1) * width)
        return torch.cat([torch.arange(width) + position * width for position in positions])

    def check_view(self, reads_cls_token: bool) -> None:
        if reads_cls_token and not self.num_prefix_tokens:
            raise ValueError(
                "This probe reads the [CLS] token, but the tokens hold patches only: read them (or extract the "
                "cache) with token_selection='all'."
            )

    def view(self, tokens: torch.Tensor, channels: slice | torch.Tensor | None, reads_cls_token: bool) -> torch.Tensor:
        """A probe's tokens ``[B, N, C]``: its channels, and the [CLS] token only if it reads one."""
        self.check_view(reads_cls_token)
        if self.num_prefix_tokens and not reads_cls_token:
            tokens = tokens[:, 1:]
        if channels is None:
            return tokens
        return tokens[..., channels] if isinstance(channels, slice) else tokens.index_select(-1, channels)
