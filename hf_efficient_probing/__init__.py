"""Attentive probing of frozen vision encoders, in the Hugging Face ecosystem.

Importing the package registers its configs and heads with the `transformers` Auto classes, so saved probes load
with ``AutoModelForEfficientProbing``, ``AutoModelForImageClassification`` or ``pipeline`` without remote code; and
makes ``pipeline("image-classification")`` return a multi-label probe's classes above its threshold
(`hf_efficient_probing.pipeline`; every other model keeps transformers' behaviour).
"""

import importlib.metadata

from transformers import AutoConfig, AutoModelForImageClassification

from .configuration_probing import AttentiveProbingConfig, EfficientProbingConfig, LinearProbingConfig, ProbingConfig
from .modeling_families import *  # noqa: F403  (the named heads, ``ViTMAEForEfficientProbing``, ...)
from .modeling_probing import (
    GENERIC_PROBE_CLASSES,
    NAMED_PROBE_CLASSES,
    AutoModelForEfficientProbing,
    ProbingOutput,
    ProbingPreTrainedModel,
    VisionModelForAttentiveProbing,
    VisionModelForEfficientProbing,
    VisionModelForLinearProbing,
)
from .pipeline import register_pipeline
from .probes.counting import count_trainable_parameters, probe_parameter_count

__version__ = importlib.metadata.version("hf-efficient-probing")

for _model_class in GENERIC_PROBE_CLASSES.values():
    AutoConfig.register(_model_class.config_class.model_type, _model_class.config_class, exist_ok=True)
    AutoModelForImageClassification.register(_model_class.config_class, _model_class, exist_ok=True)
register_pipeline()

__all__ = [
    "AttentiveProbingConfig",
    "AutoModelForEfficientProbing",
    "EfficientProbingConfig",
    "LinearProbingConfig",
    "ProbingConfig",
    "ProbingOutput",
    "ProbingPreTrainedModel",
    "VisionModelForAttentiveProbing",
    "VisionModelForEfficientProbing",
    "VisionModelForLinearProbing",
    "count_trainable_parameters",
    "probe_parameter_count",
    *(model_class.__name__ for model_class in NAMED_PROBE_CLASSES.values()),  # registered by `modeling_families`
]
