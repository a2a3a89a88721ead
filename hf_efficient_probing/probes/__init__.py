"""Poolings (the attention math) as plain ``torch.nn.Module``s, and the name -> class registry.

Adding a probe: write its pooling in a module of this package, subclassing :class:`Pooling`, and add one entry to
``POOLINGS``. The configs, models, converter and parameter tests pick it up from the registry.
"""

from __future__ import annotations

from .base import Pooling, PoolingOutput
from .efficient import EfficientProbing, valid_num_queries
from .head import ProbeHead, ProbeHeadOutput
from .linear import LINEAR_FEATURES, LinearPooling

POOLINGS: dict[str, type[Pooling]] = {
    "ep": EfficientProbing,
    "linear": LinearPooling,
}


def build_pooling(name: str, hidden_size: int, **kwargs) -> Pooling:
    """Build the pooling registered as ``name`` for tokens of width ``hidden_size``."""
    if name not in POOLINGS:
        raise ValueError(f"Unknown pooling {name!r}; the registered poolings are {sorted(POOLINGS)}.")
    return POOLINGS[name](hidden_size, **kwargs)


__all__ = [
    "LINEAR_FEATURES",
    "POOLINGS",
    "EfficientProbing",
    "LinearPooling",
    "Pooling",
    "PoolingOutput",
    "ProbeHead",
    "ProbeHeadOutput",
    "build_pooling",
    "valid_num_queries",
]
