"""Poolings (the attention math) as plain ``torch.nn.Module``s, and the name -> class registry.

Adding a probe: write its pooling in a module of this package, subclassing :class:`Pooling`, and add one entry to
``POOLINGS``. The configs, models, converter and parameter tests pick it up from the registry.
"""

from __future__ import annotations

from .abmilp import ABMILPPooling
from .base import Pooling, PoolingOutput
from .clip_pool import CLIPAttentionPooling
from .cross_attention import (
    AIMPooling,
    CAEPooling,
    ClassAttentionPooling,
    CoCaPooling,
    JEPAPooling,
    MAPPooling,
    MultiHeadCrossAttentionPooling,
)
from .dinovit import DinoViTBlockPooling
from .efficient import EfficientProbing, valid_num_queries
from .head import ProbeHead, ProbeHeadOutput
from .linear import LINEAR_FEATURES, LinearPooling, linear_features
from .simpool import EfficientSimPool, SimPool
from .spatial import CBAMPooling, DOLGPooling

# Keys are the official code's pooling names (its --cls_features values), plus "linear" and "mhca".
POOLINGS: dict[str, type[Pooling]] = {
    "ep": EfficientProbing,
    "linear": LinearPooling,
    "abmilp": ABMILPPooling,
    "simpool": SimPool,
    "esimpool": EfficientSimPool,
    "clip": CLIPAttentionPooling,
    "siglip": MAPPooling,
    "aim": AIMPooling,
    "coca": CoCaPooling,
    "cait": ClassAttentionPooling,
    "dinovit": DinoViTBlockPooling,
    "jepa": JEPAPooling,
    "dolg": DOLGPooling,
    "cae": CAEPooling,
    "cbam": CBAMPooling,
    "mhca": MultiHeadCrossAttentionPooling,
}

# The attentive-probing baselines (every registered pooling but EP and the linear probe), in the paper's order.
BASELINE_POOLINGS: tuple[str, ...] = tuple(name for name in POOLINGS if name not in ("ep", "linear"))


def build_pooling(name: str, hidden_size: int, **kwargs) -> Pooling:
    """Build the pooling registered as ``name`` for tokens of width ``hidden_size``."""
    if name not in POOLINGS:
        raise ValueError(f"Unknown pooling {name!r}; the registered poolings are {sorted(POOLINGS)}.")
    return POOLINGS[name](hidden_size, **kwargs)


__all__ = [
    "BASELINE_POOLINGS",
    "LINEAR_FEATURES",
    "POOLINGS",
    "EfficientProbing",
    "LinearPooling",
    "Pooling",
    "PoolingOutput",
    "ProbeHead",
    "ProbeHeadOutput",
    "build_pooling",
    "linear_features",
    "valid_num_queries",
]
