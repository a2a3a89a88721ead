"""Poolings (the attention math) as plain ``torch.nn.Module``s, and the registry of probe kinds.

Adding a probe: write its pooling as a subclass of :class:`Pooling` and register it with
``@register_pooling("name")`` (or one row of the table below for a pooling of this package). Configs
(``AttentiveProbingConfig(pooler_type="name")``), ``AutoModelForEfficientProbing.from_backbone(probe="name")``,
``--probe name`` and the parameter tests find it in the registry (`probes.registry`).
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
from .registry import (
    ATTENTIVE_CONFIG_TYPE,
    PROBE_KINDS,
    ProbeKind,
    attentive_kinds,
    build_pooling,
    probe_kind,
    register_pooling,
    register_probe_kind,
)
from .simpool import EfficientSimPool, SimPool
from .spatial import CBAMPooling, DOLGPooling
from .vjepa2 import VJEPA2Pooling

# The official code's pooling names (its --cls_features values), plus "linear" and "mhca". EP and the linear probe
# have configs of their own; every other kind is configured by the attentive config.
for _name, _pooling, _config_type in [
    ("ep", EfficientProbing, "efficient_probing"),
    ("linear", LinearPooling, "linear_probing"),
    ("abmilp", ABMILPPooling, ATTENTIVE_CONFIG_TYPE),
    ("simpool", SimPool, ATTENTIVE_CONFIG_TYPE),
    ("esimpool", EfficientSimPool, ATTENTIVE_CONFIG_TYPE),
    ("clip", CLIPAttentionPooling, ATTENTIVE_CONFIG_TYPE),
    ("siglip", MAPPooling, ATTENTIVE_CONFIG_TYPE),
    ("aim", AIMPooling, ATTENTIVE_CONFIG_TYPE),
    ("coca", CoCaPooling, ATTENTIVE_CONFIG_TYPE),
    ("cait", ClassAttentionPooling, ATTENTIVE_CONFIG_TYPE),
    ("dinovit", DinoViTBlockPooling, ATTENTIVE_CONFIG_TYPE),
    ("jepa", JEPAPooling, ATTENTIVE_CONFIG_TYPE),
    ("dolg", DOLGPooling, ATTENTIVE_CONFIG_TYPE),
    ("cae", CAEPooling, ATTENTIVE_CONFIG_TYPE),
    ("cbam", CBAMPooling, ATTENTIVE_CONFIG_TYPE),
    ("mhca", MultiHeadCrossAttentionPooling, ATTENTIVE_CONFIG_TYPE),
]:
    register_probe_kind(_name, _pooling, _config_type)

# The paper's attentive-probing baselines, in its order (every kind above but EP and the linear probe).
BASELINE_POOLINGS: tuple[str, ...] = attentive_kinds()

# Beyond the paper: V-JEPA 2's attentive probe, the standard probe of video encoders (an attentive kind as well).
register_probe_kind("vjepa2", VJEPA2Pooling)

__all__ = [
    "ATTENTIVE_CONFIG_TYPE",
    "BASELINE_POOLINGS",
    "LINEAR_FEATURES",
    "PROBE_KINDS",
    "EfficientProbing",
    "LinearPooling",
    "Pooling",
    "PoolingOutput",
    "ProbeHead",
    "ProbeHeadOutput",
    "ProbeKind",
    "VJEPA2Pooling",
    "attentive_kinds",
    "build_pooling",
    "linear_features",
    "probe_kind",
    "register_pooling",
    "register_probe_kind",
    "valid_num_queries",
]
