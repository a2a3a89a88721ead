"""Named heads: the generic heads pinned to one backbone family, so that a wrong backbone fails early and the class
name says what it probes (``ViTMAEForEfficientProbing``, ``ConvNextForLinearProbing``, ...).

Each class registers itself for its ``family`` (the backbone config's ``model_type``) when it is defined:
`AutoModelForEfficientProbing` and ``from_pretrained`` then choose it for configs of that family. Adding a family is
one row in ``backbones.FAMILIES`` and, if wanted, one class per probe kind here::

    class MyFamilyForEfficientProbing(VisionModelForEfficientProbing, family="my_family"):
        "Efficient Probing over MyFamily backbones."
"""

from .modeling_probing import (
    VisionModelForAttentiveProbing,
    VisionModelForEfficientProbing,
    VisionModelForLinearProbing,
)


class ViTForEfficientProbing(VisionModelForEfficientProbing, family="vit"):
    """Efficient Probing over ViT backbones."""


class ViTForLinearProbing(VisionModelForLinearProbing, family="vit"):
    """Linear probing over ViT backbones."""


class ViTForAttentiveProbing(VisionModelForAttentiveProbing, family="vit"):
    """An attentive-probing baseline over ViT backbones."""


class ViTMAEForEfficientProbing(VisionModelForEfficientProbing, family="vit_mae"):
    """Efficient Probing over ViT-MAE backbones."""


class ViTMAEForLinearProbing(VisionModelForLinearProbing, family="vit_mae"):
    """Linear probing over ViT-MAE backbones."""


class ViTMAEForAttentiveProbing(VisionModelForAttentiveProbing, family="vit_mae"):
    """An attentive-probing baseline over ViT-MAE backbones."""


class ViTMSNForEfficientProbing(VisionModelForEfficientProbing, family="vit_msn"):
    """Efficient Probing over ViT-MSN backbones."""


class ViTMSNForLinearProbing(VisionModelForLinearProbing, family="vit_msn"):
    """Linear probing over ViT-MSN backbones."""


class ViTMSNForAttentiveProbing(VisionModelForAttentiveProbing, family="vit_msn"):
    """An attentive-probing baseline over ViT-MSN backbones."""


class DeiTForEfficientProbing(VisionModelForEfficientProbing, family="deit"):
    """Efficient Probing over DeiT backbones."""


class DeiTForLinearProbing(VisionModelForLinearProbing, family="deit"):
    """Linear probing over DeiT backbones."""


class DeiTForAttentiveProbing(VisionModelForAttentiveProbing, family="deit"):
    """An attentive-probing baseline over DeiT backbones."""


class BeitForEfficientProbing(VisionModelForEfficientProbing, family="beit"):
    """Efficient Probing over BEiT backbones."""


class BeitForLinearProbing(VisionModelForLinearProbing, family="beit"):
    """Linear probing over BEiT backbones."""


class BeitForAttentiveProbing(VisionModelForAttentiveProbing, family="beit"):
    """An attentive-probing baseline over BEiT backbones."""


class Data2VecVisionForEfficientProbing(VisionModelForEfficientProbing, family="data2vec-vision"):
    """Efficient Probing over data2vec-vision backbones."""


class Data2VecVisionForLinearProbing(VisionModelForLinearProbing, family="data2vec-vision"):
    """Linear probing over data2vec-vision backbones."""


class Data2VecVisionForAttentiveProbing(VisionModelForAttentiveProbing, family="data2vec-vision"):
    """An attentive-probing baseline over data2vec-vision backbones."""


class IJepaForEfficientProbing(VisionModelForEfficientProbing, family="ijepa"):
    """Efficient Probing over I-JEPA backbones."""


class IJepaForLinearProbing(VisionModelForLinearProbing, family="ijepa"):
    """Linear probing over I-JEPA backbones."""


class IJepaForAttentiveProbing(VisionModelForAttentiveProbing, family="ijepa"):
    """An attentive-probing baseline over I-JEPA backbones."""


class Dinov2ForEfficientProbing(VisionModelForEfficientProbing, family="dinov2"):
    """Efficient Probing over DINOv2 backbones."""


class Dinov2ForLinearProbing(VisionModelForLinearProbing, family="dinov2"):
    """Linear probing over DINOv2 backbones."""


class Dinov2ForAttentiveProbing(VisionModelForAttentiveProbing, family="dinov2"):
    """An attentive-probing baseline over DINOv2 backbones."""


class Dinov2WithRegistersForEfficientProbing(VisionModelForEfficientProbing, family="dinov2_with_registers"):
    """Efficient Probing over DINOv2-with-registers backbones."""


class Dinov2WithRegistersForLinearProbing(VisionModelForLinearProbing, family="dinov2_with_registers"):
    """Linear probing over DINOv2-with-registers backbones."""


class Dinov2WithRegistersForAttentiveProbing(VisionModelForAttentiveProbing, family="dinov2_with_registers"):
    """An attentive-probing baseline over DINOv2-with-registers backbones."""


class DINOv3ViTForEfficientProbing(VisionModelForEfficientProbing, family="dinov3_vit"):
    """Efficient Probing over DINOv3 ViT backbones."""


class DINOv3ViTForLinearProbing(VisionModelForLinearProbing, family="dinov3_vit"):
    """Linear probing over DINOv3 ViT backbones."""


class DINOv3ViTForAttentiveProbing(VisionModelForAttentiveProbing, family="dinov3_vit"):
    """An attentive-probing baseline over DINOv3 ViT backbones."""


class Aimv2VisionForEfficientProbing(VisionModelForEfficientProbing, family="aimv2_vision_model"):
    """Efficient Probing over AIMv2 vision backbones."""


class Aimv2VisionForLinearProbing(VisionModelForLinearProbing, family="aimv2_vision_model"):
    """Linear probing over AIMv2 vision backbones."""


class Aimv2VisionForAttentiveProbing(VisionModelForAttentiveProbing, family="aimv2_vision_model"):
    """An attentive-probing baseline over AIMv2 vision backbones."""


class CLIPVisionForEfficientProbing(VisionModelForEfficientProbing, family="clip_vision_model"):
    """Efficient Probing over CLIP vision backbones."""


class CLIPVisionForLinearProbing(VisionModelForLinearProbing, family="clip_vision_model"):
    """Linear probing over CLIP vision backbones."""


class CLIPVisionForAttentiveProbing(VisionModelForAttentiveProbing, family="clip_vision_model"):
    """An attentive-probing baseline over CLIP vision backbones."""


class SiglipVisionForEfficientProbing(VisionModelForEfficientProbing, family="siglip_vision_model"):
    """Efficient Probing over SigLIP vision backbones."""


class SiglipVisionForLinearProbing(VisionModelForLinearProbing, family="siglip_vision_model"):
    """Linear probing over SigLIP vision backbones."""


class SiglipVisionForAttentiveProbing(VisionModelForAttentiveProbing, family="siglip_vision_model"):
    """An attentive-probing baseline over SigLIP vision backbones."""


class Siglip2VisionForEfficientProbing(VisionModelForEfficientProbing, family="siglip2_vision_model"):
    """Efficient Probing over SigLIP2 (NaFlex) vision backbones."""


class Siglip2VisionForLinearProbing(VisionModelForLinearProbing, family="siglip2_vision_model"):
    """Linear probing over SigLIP2 (NaFlex) vision backbones."""


class Siglip2VisionForAttentiveProbing(VisionModelForAttentiveProbing, family="siglip2_vision_model"):
    """An attentive-probing baseline over SigLIP2 (NaFlex) vision backbones."""


class ConvNextForEfficientProbing(VisionModelForEfficientProbing, family="convnext"):
    """Efficient Probing over ConvNeXt backbones."""


class ConvNextForLinearProbing(VisionModelForLinearProbing, family="convnext"):
    """Linear probing over ConvNeXt backbones."""


class ConvNextForAttentiveProbing(VisionModelForAttentiveProbing, family="convnext"):
    """An attentive-probing baseline over ConvNeXt backbones."""


class ConvNextV2ForEfficientProbing(VisionModelForEfficientProbing, family="convnextv2"):
    """Efficient Probing over ConvNeXt V2 backbones."""


class ConvNextV2ForLinearProbing(VisionModelForLinearProbing, family="convnextv2"):
    """Linear probing over ConvNeXt V2 backbones."""


class ConvNextV2ForAttentiveProbing(VisionModelForAttentiveProbing, family="convnextv2"):
    """An attentive-probing baseline over ConvNeXt V2 backbones."""


class ResNetForEfficientProbing(VisionModelForEfficientProbing, family="resnet"):
    """Efficient Probing over ResNet backbones."""


class ResNetForLinearProbing(VisionModelForLinearProbing, family="resnet"):
    """Linear probing over ResNet backbones."""


class ResNetForAttentiveProbing(VisionModelForAttentiveProbing, family="resnet"):
    """An attentive-probing baseline over ResNet backbones."""


class RegNetForEfficientProbing(VisionModelForEfficientProbing, family="regnet"):
    """Efficient Probing over RegNet backbones."""


class RegNetForLinearProbing(VisionModelForLinearProbing, family="regnet"):
    """Linear probing over RegNet backbones."""


class RegNetForAttentiveProbing(VisionModelForAttentiveProbing, family="regnet"):
    """An attentive-probing baseline over RegNet backbones."""


class EfficientNetForEfficientProbing(VisionModelForEfficientProbing, family="efficientnet"):
    """Efficient Probing over EfficientNet backbones."""


class EfficientNetForLinearProbing(VisionModelForLinearProbing, family="efficientnet"):
    """Linear probing over EfficientNet backbones."""


class EfficientNetForAttentiveProbing(VisionModelForAttentiveProbing, family="efficientnet"):
    """An attentive-probing baseline over EfficientNet backbones."""


class MobileNetV2ForEfficientProbing(VisionModelForEfficientProbing, family="mobilenet_v2"):
    """Efficient Probing over MobileNetV2 backbones."""


class MobileNetV2ForLinearProbing(VisionModelForLinearProbing, family="mobilenet_v2"):
    """Linear probing over MobileNetV2 backbones."""


class MobileNetV2ForAttentiveProbing(VisionModelForAttentiveProbing, family="mobilenet_v2"):
    """An attentive-probing baseline over MobileNetV2 backbones."""


class MobileViTForEfficientProbing(VisionModelForEfficientProbing, family="mobilevit"):
    """Efficient Probing over MobileViT backbones."""


class MobileViTForLinearProbing(VisionModelForLinearProbing, family="mobilevit"):
    """Linear probing over MobileViT backbones."""


class MobileViTForAttentiveProbing(VisionModelForAttentiveProbing, family="mobilevit"):
    """An attentive-probing baseline over MobileViT backbones."""


class VitDetForEfficientProbing(VisionModelForEfficientProbing, family="vitdet"):
    """Efficient Probing over ViTDet backbones."""


class VitDetForLinearProbing(VisionModelForLinearProbing, family="vitdet"):
    """Linear probing over ViTDet backbones."""


class VitDetForAttentiveProbing(VisionModelForAttentiveProbing, family="vitdet"):
    """An attentive-probing baseline over ViTDet backbones."""


class SwinForEfficientProbing(VisionModelForEfficientProbing, family="swin"):
    """Efficient Probing over Swin backbones."""


class SwinForLinearProbing(VisionModelForLinearProbing, family="swin"):
    """Linear probing over Swin backbones."""


class SwinForAttentiveProbing(VisionModelForAttentiveProbing, family="swin"):
    """An attentive-probing baseline over Swin backbones."""


class Swinv2ForEfficientProbing(VisionModelForEfficientProbing, family="swinv2"):
    """Efficient Probing over Swin V2 backbones."""


class Swinv2ForLinearProbing(VisionModelForLinearProbing, family="swinv2"):
    """Linear probing over Swin V2 backbones."""


class Swinv2ForAttentiveProbing(VisionModelForAttentiveProbing, family="swinv2"):
    """An attentive-probing baseline over Swin V2 backbones."""


class FocalNetForEfficientProbing(VisionModelForEfficientProbing, family="focalnet"):
    """Efficient Probing over FocalNet backbones."""


class FocalNetForLinearProbing(VisionModelForLinearProbing, family="focalnet"):
    """Linear probing over FocalNet backbones."""


class FocalNetForAttentiveProbing(VisionModelForAttentiveProbing, family="focalnet"):
    """An attentive-probing baseline over FocalNet backbones."""


class HieraForEfficientProbing(VisionModelForEfficientProbing, family="hiera"):
    """Efficient Probing over Hiera backbones."""


class HieraForLinearProbing(VisionModelForLinearProbing, family="hiera"):
    """Linear probing over Hiera backbones."""


class HieraForAttentiveProbing(VisionModelForAttentiveProbing, family="hiera"):
    """An attentive-probing baseline over Hiera backbones."""


class PvtForEfficientProbing(VisionModelForEfficientProbing, family="pvt"):
    """Efficient Probing over PVT backbones."""


class PvtForLinearProbing(VisionModelForLinearProbing, family="pvt"):
    """Linear probing over PVT backbones."""


class PvtForAttentiveProbing(VisionModelForAttentiveProbing, family="pvt"):
    """An attentive-probing baseline over PVT backbones."""


class LevitForEfficientProbing(VisionModelForEfficientProbing, family="levit"):
    """Efficient Probing over LeViT backbones."""


class LevitForLinearProbing(VisionModelForLinearProbing, family="levit"):
    """Linear probing over LeViT backbones."""


class LevitForAttentiveProbing(VisionModelForAttentiveProbing, family="levit"):
    """An attentive-probing baseline over LeViT backbones."""


class TimmWrapperForEfficientProbing(VisionModelForEfficientProbing, family="timm_wrapper"):
    """Efficient Probing over timm backbones."""


class TimmWrapperForLinearProbing(VisionModelForLinearProbing, family="timm_wrapper"):
    """Linear probing over timm backbones."""


class TimmWrapperForAttentiveProbing(VisionModelForAttentiveProbing, family="timm_wrapper"):
    """An attentive-probing baseline over timm backbones."""


class VJEPA2ForEfficientProbing(VisionModelForEfficientProbing, family="vjepa2"):
    """Efficient Probing over V-JEPA 2 video backbones (space-time tokens)."""


class VJEPA2ForLinearProbing(VisionModelForLinearProbing, family="vjepa2"):
    """Linear probing over V-JEPA 2 video backbones."""


class VJEPA2ForAttentiveProbing(VisionModelForAttentiveProbing, family="vjepa2"):
    """An attentive-probing baseline (or V-JEPA 2's probe, ``vjepa2``) over V-JEPA 2 video backbones."""


class VideoMAEForEfficientProbing(VisionModelForEfficientProbing, family="videomae"):
    """Efficient Probing over VideoMAE video backbones (space-time tokens)."""


class VideoMAEForLinearProbing(VisionModelForLinearProbing, family="videomae"):
    """Linear probing over VideoMAE video backbones."""


class VideoMAEForAttentiveProbing(VisionModelForAttentiveProbing, family="videomae"):
    """An attentive-probing baseline (or V-JEPA 2's probe, ``vjepa2``) over VideoMAE video backbones."""


class VivitForEfficientProbing(VisionModelForEfficientProbing, family="vivit"):
    """Efficient Probing over ViViT video backbones (space-time tokens)."""


class VivitForLinearProbing(VisionModelForLinearProbing, family="vivit"):
    """Linear probing over ViViT video backbones."""


class VivitForAttentiveProbing(VisionModelForAttentiveProbing, family="vivit"):
    """An attentive-probing baseline (or V-JEPA 2's probe, ``vjepa2``) over ViViT video backbones."""


class TimesformerForEfficientProbing(VisionModelForEfficientProbing, family="timesformer"):
    """Efficient Probing over TimeSformer video backbones (space-time tokens)."""


class TimesformerForLinearProbing(VisionModelForLinearProbing, family="timesformer"):
    """Linear probing over TimeSformer video backbones."""


class TimesformerForAttentiveProbing(VisionModelForAttentiveProbing, family="timesformer"):
    """An attentive-probing baseline (or V-JEPA 2's probe, ``vjepa2``) over TimeSformer video backbones."""
