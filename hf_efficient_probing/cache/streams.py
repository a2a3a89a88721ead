"""One stream of backbone tokens for many probes: from a token cache, or live from the backbone.

A stream stores (or reads) every layer any of its probes needs, once, and each probe takes its own view: its layers'
channel blocks, with or without the [CLS] token. Both kinds of stream visit rows in the same order for the same
seed and epoch, so a probe sees the same batches whether it trains alone or with others, cached or live.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..backbones import TokenReader
from .dataset import TokenCache, TokenCacheDataset
from .extraction import collate_images
from .layout import TokenLayout


def epoch_order(num_rows: int, epoch: int, seed: int, shuffle: bool = True) -> list[int]:
    """The row order of one epoch: a permutation drawn from ``(seed, epoch)`` alone, never from the global RNG."""
    if not shuffle:
        return list(range(num_rows))
    return torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()


class CachedTokens:
    """A stream over a token cache: rows are sliced from the memory-mapped shards."""

    def __init__(self, cache: TokenCache, num_workers: int = 0):
        self.dataset = TokenCacheDataset(cache)
        self.num_workers = num_workers
        self.layout = cache.layout

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self, order: Sequence[int], batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = DataLoader(self.dataset, batch_size=batch_size, sampler=order, num_workers=self.num_workers)
        for batch in loader:
            yield batch["tokens"], batch["labels"]


class LiveTokens:
    """A stream that runs the frozen backbone on each batch of images, reading every requested layer in one pass."""

    def __init__(
        self,
        backbone: nn.Module,
        dataset: Dataset,
        feature_layers: Sequence[int],
        token_selection: str = "patch",
        apply_final_norm: bool | None = None,
        num_workers: int = 0,
        image_key: str = "pixel_values",
        label_key: str = "labels",
    ):
        self.backbone = backbone.eval()
        self.dataset = dataset
        self.reader = TokenReader(backbone.config, feature_layers, token_selection, apply_final_norm)
        num_layers = self.reader.num_hidden_layers
        self.layout = TokenLayout(
            self.reader.layers,
            self.reader.layer_width,
            int(token_selection == "all"),
            num_layers,
        )
        self.num_workers = num_workers
        self.collate = collate_images(image_key, label_key)

    def __len__(self) -> int:
        return len(self.dataset)

    @torch.no_grad()
    def batches(self, order: Sequence[int], batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = DataLoader(
            self.dataset, batch_size=batch_size, sampler=order, num_workers=self.num_workers, collate_fn=self.collate
        )
        device = next(self.backbone.parameters()).device
        for pixel_values, labels in loader:
            yield self.reader(self.backbone, pixel_values.to(device)).tokens, labels
