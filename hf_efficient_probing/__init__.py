"""Attentive probing of frozen vision encoders, in the Hugging Face ecosystem.

Importing the package registers its configs and heads with the `transformers` Auto classes, so saved probes load
with ``AutoModelForEfficientProbing``, ``AutoModelForImageClassification`` or ``pipeline`` without remote code.
"""

from transformers import AutoConfig, AutoModelForImageClassification

from .configuration_probing import AttentiveProbingConfig, EfficientProbingConfig, LinearProbingConfig, ProbingConfig
from .modeling_probing import (
    GENERIC_PROBE_CLASSES,
    AutoModelForEfficientProbing,
    BeitForAttentiveProbing,
    BeitForEfficientProbing,
    BeitForLinearProbing,
    CLIPVisionForAttentiveProbing,
    CLIPVisionForEfficientProbing,
    CLIPVisionForLinearProbing,
    DeiTForAttentiveProbing,
    DeiTForEfficientProbing,
    DeiTForLinearProbing,
    Dinov2ForAttentiveProbing,
    Dinov2ForEfficientProbing,
    Dinov2ForLinearProbing,
    Dinov2WithRegistersForAttentiveProbing,
    Dinov2WithRegistersForEfficientProbing,
    Dinov2WithRegistersForLinearProbing,
    DINOv3ViTForAttentiveProbing,
    DINOv3ViTForEfficientProbing,
    DINOv3ViTForLinearProbing,
    IJepaForAttentiveProbing,
    IJepaForEfficientProbing,
    IJepaForLinearProbing,
    ProbingOutput,
    ProbingPreTrainedModel,
    SiglipVisionForAttentiveProbing,
    SiglipVisionForEfficientProbing,
    SiglipVisionForLinearProbing,
    VisionModelForAttentiveProbing,
    VisionModelForEfficientProbing,
    VisionModelForLinearProbing,
    ViTForAttentiveProbing,
    ViTForEfficientProbing,
    ViTForLinearProbing,
    ViTMAEForAttentiveProbing,
    ViTMAEForEfficientProbing,
    ViTMAEForLinearProbing,
)
from .probes.counting import count_trainable_parameters, probe_parameter_count

__version__ = "0.1.0"

for _model_class in GENERIC_PROBE_CLASSES.values():
    AutoConfig.register(_model_class.config_class.model_type, _model_class.config_class, exist_ok=True)
    AutoModelForImageClassification.register(_model_class.config_class, _model_class, exist_ok=True)

__all__ = [
    "AttentiveProbingConfig",
    "ViTForAttentiveProbing",
    "ViTMAEForAttentiveProbing",
    "DeiTForAttentiveProbing",
    "BeitForAttentiveProbing",
    "IJepaForAttentiveProbing",
    "Dinov2ForAttentiveProbing",
    "Dinov2WithRegistersForAttentiveProbing",
    "DINOv3ViTForAttentiveProbing",
    "CLIPVisionForAttentiveProbing",
    "SiglipVisionForAttentiveProbing",
    "VisionModelForAttentiveProbing",
    "AutoModelForEfficientProbing",
    "BeitForEfficientProbing",
    "BeitForLinearProbing",
    "CLIPVisionForEfficientProbing",
    "CLIPVisionForLinearProbing",
    "DINOv3ViTForEfficientProbing",
    "DINOv3ViTForLinearProbing",
    "DeiTForEfficientProbing",
    "DeiTForLinearProbing",
    "Dinov2ForEfficientProbing",
    "Dinov2ForLinearProbing",
    "Dinov2WithRegistersForEfficientProbing",
    "Dinov2WithRegistersForLinearProbing",
    "EfficientProbingConfig",
    "IJepaForEfficientProbing",
    "IJepaForLinearProbing",
    "LinearProbingConfig",
    "ProbingConfig",
    "ProbingOutput",
    "ProbingPreTrainedModel",
    "SiglipVisionForEfficientProbing",
    "SiglipVisionForLinearProbing",
    "ViTForEfficientProbing",
    "ViTForLinearProbing",
    "ViTMAEForEfficientProbing",
    "ViTMAEForLinearProbing",
    "VisionModelForEfficientProbing",
    "VisionModelForLinearProbing",
    "count_trainable_parameters",
    "probe_parameter_count",
]
