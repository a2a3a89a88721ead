"""Global image features from a token cache, for k-NN: the [CLS] token or the mean of the patch tokens (GAP).

k-NN compares one vector per image, so it reads the cache once, row block by row block, and keeps only ``[rows, D]``
features in memory, never the ``[rows, N, D]`` tokens. The k-NN itself (``training.knn.knn_classify``) takes these
tensors; the cache does not import it, so the glue lives in the script that calls both.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader

from ..probes import linear_features
from .dataset import TokenCache, TokenCacheDataset, TokenCacheView

GLOBAL_FEATURES = ("cls", "gap")


@torch.no_grad()
def global_features(
    cache: TokenCache | TokenCacheView,
    features: str = "cls",
    feature_layers: Sequence[int] | None = None,
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features [rows, C] float32, labels [rows])`` of every cached image.

    Args:
        features: ``"cls"`` (needs a backbone with a [CLS] token) or ``"gap"``.
        feature_layers: the cached layers to use (the view's by default), concatenated along channels.
    """
    if features not in GLOBAL_FEATURES:
        raise ValueError(f"k-NN features must be one of {GLOBAL_FEATURES}, got {features!r}.")
    dataset = TokenCacheDataset(
        cache, feature_layers=feature_layers, token_selection="all" if features == "cls" else "patch"
    )
    rows = []
    for batch in DataLoader(dataset, batch_size=batch_size):
        rows.append(linear_features(batch["tokens"].float(), features, num_prefix_tokens=int(features == "cls")))
    return torch.cat(rows), dataset.labels.clone()
