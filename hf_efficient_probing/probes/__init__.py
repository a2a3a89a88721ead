"""Poolings (the attention math) as plain ``torch.nn.Module``s, and the name -> class registry.

Adding a probe: write its pooling as a subclass of :class:`Pooling` and register it with
``@register_pooling("name")`` (or one entry in ``POOLINGS`` for a pooling of this package). Configs
(``AttentiveProbingConfig(pooler_type="name")``), ``AutoModelForEfficientProbing.from_backbone(probe="name")``,
``--probe name`` and the parameter tests find it in the registry.
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

# The paper's attentive-probing baselines (every pooling of this package but EP and the linear probe), in its order.
BASELINE_POOLINGS: tuple[str, ...] = tuple(name for name in POOLINGS if name not in ("ep", "linear"))


def register_pooling(name: str):
    """Class decorator registering a :class:`Pooling` subclass as probe kind ``name`` (an attentive probe: it is
    configured by ``AttentiveProbingConfig(pooler_type=name, pooler_kwargs=...)``)."""

    def register(pooling: type[Pooling]) -> type[Pooling]:
        if not (isinstance(pooling, type) and issubclass(pooling, Pooling)):
            raise TypeError(f"register_pooling({name!r}) takes a subclass of Pooling, got {pooling!r}.")
        if name in POOLINGS:
            raise ValueError(
                f"A pooling is already registered as {name!r} ({POOLINGS[name].__name__}); pick another name."
            )
        POOLINGS[name] = pooling
        return pooling

    return register


def attentive_poolings() -> tuple[str, ...]:
    """Every registered pooling but EP and the linear probe (which have their own configs), the paper's first."""
    return tuple(name for name in POOLINGS if name not in ("ep", "linear"))


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
    "attentive_poolings",
    "build_pooling",
    "linear_features",
    "register_pooling",
    "valid_num_queries",
]
