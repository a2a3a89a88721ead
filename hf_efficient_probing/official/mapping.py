"""Which backbone each official head was trained on, and where the same weights and tokens are found here.

A released head names its backbone only in the official code's terms (``model``, ``loader``,
``pretrain_tag``/``finetune``). ``OFFICIAL_BACKBONES`` maps each to the Hub checkpoint holding the same weights and the
token settings that reproduce the official inputs, or says why the row stays unmapped. A row is mapped only when the
weights are the same published checkpoint and the transformers family is shown, by a test on the same random
weights, to hand the probe the tokens the official loader handed it. ``mapping_table`` renders the table for the
README; ``official_image_processor`` is the official evaluation transform as an image processor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from transformers import ConvNextImageProcessor, ViTImageProcessor
from transformers.image_utils import PILImageResampling

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_CLASSES = Path(__file__).parent / "imagenet_1k_classes.json"  # [wnid, WordNet lemmas] in ImageFolder order


@dataclass(frozen=True)
class OfficialBackbone:
    """One backbone of the official code and where its weights and tokens are found here.

    Attributes:
        model, loader, weights: the official ``--model``, loader (``""`` for the default ``models_vit``) and weights
            (``pretrain_tag``, else ``finetune``), as a released head's ``meta`` names them.
        name: readable name of the backbone (method and architecture).
        hub_id: the Hub checkpoint with the same weights, or ``None`` when the row is unmapped.
        model_type: the transformers family of ``hub_id`` (its tokens are the ones tested equal to the official).
        apply_final_norm: whether the official tokens come after the backbone's final norm.
        feature_layers: the layers (timm: stages) the official tokens are read from.
        image_size: the image size of the official run, which the backbone must be built for.
        transform: the official evaluation transform: ``"imagenet"`` (the official ``build_transforms``: resize to
            256/224 of the size, centre crop, ImageNet statistics) or ``"siglip"`` (open_clip's for SigLIP: squash
            to the size, bicubic, mean and std 0.5).
        all_tokens_unmapped: why an ``_all`` head of the row (a [CLS] before the patches) cannot be mapped, if so.
        tokens_checked_against: the implementation the transformers family's tokens were tested equal to.
        unmapped: why no Hub backbone is given (only for unmapped rows).
    """

    model: str
    loader: str
    weights: str
    name: str
    hub_id: str | None = None
    model_type: str | None = None
    apply_final_norm: bool | None = None
    feature_layers: tuple[int, ...] = (-1,)
    image_size: int | None = None
    transform: str = "imagenet"
    all_tokens_unmapped: str | None = None
    tokens_checked_against: str | None = None
    unmapped: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.model, self.loader, self.weights)

    @property
    def token_settings(self) -> str:
        norm = "after" if self.apply_final_norm else "before"
        return f"`feature_layers={list(self.feature_layers)}`, {norm} the final norm"


_TIMM_VIT = "timm VisionTransformer blocks (the official models_vit)"
_LOCAL = (
    "the official run loaded a local pre-training checkpoint ({weights}); which Hub checkpoint holds the same "
    "weights cannot be checked from the release"
)
_TORCH_HUB = (
    "the official loader is torch.hub ({repo}); the tokens of a transformers port are not yet shown equal to that "
    "implementation's (position-embedding interpolation and norms differ between ports)"
)
_OPEN_CLIP = (
    "the official loader is open_clip, which also chose the evaluation transform; this vision tower is not yet "
    "shown to give open_clip's tokens through a Hub checkpoint with the same weights"
)
_OPEN_CLIP_TIMM = "open_clip's TimmModel trunk.forward_features, as the official CLIPWrapper reads it"
_TIMM = "timm's forward_features as the official TimmWrapper reads it (prefix tokens dropped)"


def _local(model: str, weights: str, name: str) -> OfficialBackbone:
    return OfficialBackbone(model, "", weights, name, unmapped=_LOCAL.format(weights=weights))


def _timm(model: str, name: str) -> OfficialBackbone:
    """A backbone the official code built with ``timm.create_model(model, pretrained=True)``: the same Hub weights
    (timm's ``hf_hub_id``), read through ``TimmWrapperModel``. timm's ``forward_features`` of these models carries no
    final norm (EVA02's norm sits after its average pooling, Hiera's in its head) and ends at the last stage."""
    return OfficialBackbone(
        model,
        "timm",
        "",
        name,
        hub_id=f"timm/{model}",
        model_type="timm_wrapper",
        apply_final_norm=False,
        image_size=224,
        tokens_checked_against=_TIMM,
    )


def _torch_hub(model: str, loader: str, repo: str, name: str) -> OfficialBackbone:
    return OfficialBackbone(model, loader, "", name, unmapped=_TORCH_HUB.format(repo=repo))


def _open_clip(model: str, tag: str, name: str, reason: str = _OPEN_CLIP) -> OfficialBackbone:
    return OfficialBackbone(model, "openclip", tag, name, unmapped=reason)


def _open_clip_siglip(model: str, tag: str, name: str, timm_weights: str, image_size: int) -> OfficialBackbone:
    """A SigLIP tower of open_clip: a timm ViT trunk (``timm_pool="map"``, no projection), of which the official EP
    read every ``forward_features`` token (no prefix tokens; after the final norm). timm publishes the image tower of
    the same big_vision release as ``timm/<timm_weights>``."""
    return OfficialBackbone(
        model,
        "openclip",
        tag,
        name,
        hub_id=f"timm/{timm_weights}",
        model_type="timm_wrapper",
        apply_final_norm=True,
        image_size=image_size,
        transform="siglip",
        all_tokens_unmapped="the official ep_all reads open_clip's attention-pooled (MAP) embedding as its [CLS], "
        "which no token setting of this library produces",
        tokens_checked_against=_OPEN_CLIP_TIMM,
    )


OFFICIAL_BACKBONES: dict[tuple[str, str, str], OfficialBackbone] = {
    row.key: row
    for row in [
        OfficialBackbone(
            "vit_base_patch16",
            "",
            "vit_base_patch16_224.mae",
            "MAE ViT-B/16",
            hub_id="facebook/vit-mae-base",
            model_type="vit_mae",
            apply_final_norm=False,
            image_size=224,
            tokens_checked_against=_TIMM_VIT,
        ),
        OfficialBackbone(
            "vit_large_patch16",
            "",
            "vit_large_patch16_224.mae",
            "MAE ViT-L/16",
            hub_id="facebook/vit-mae-large",
            model_type="vit_mae",
            apply_final_norm=False,
            image_size=224,
            tokens_checked_against=_TIMM_VIT,
        ),
        OfficialBackbone(
            "vit_base_patch16",
            "",
            "vit_base_patch16_224.dino",
            "DINO ViT-B/16",
            hub_id="facebook/dino-vitb16",
            model_type="vit",
            apply_final_norm=False,
            image_size=224,
            tokens_checked_against=_TIMM_VIT,
        ),
        _local("vit_small_patch16", "vit_small_patch16_224.mae/checkpoint-799.pth", "MAE ViT-S/16"),
        _local("vit_base_patch16", "vit_base_patch16_224.ibot/checkpoint-799.pth", "iBOT ViT-B/16"),
        _local("vit_large_patch16", "vit_large_patch16_224.ibot/checkpoint-799.pth", "iBOT ViT-L/16"),
        _local("vit_base_patch16", "vit_base_patch16_224.maskfeat/checkpoint-799.pth", "MaskFeat ViT-B/16"),
        _local("vit_large_patch16", "vit_large_patch16_224.maskfeat/checkpoint-799.pth", "MaskFeat ViT-L/16"),
        _local("vit_base_patch16", "vit_base_patch16_224.mocov3/checkpoint-799.pth", "MoCov3 ViT-B/16"),
        _local("vit_huge_patch14", "vit_huge_patch14_224.ijepa/checkpoint-799.pth", "I-JEPA ViT-H/14"),
        OfficialBackbone(
            "vit_base_patch16",
            "simmim",
            "vit_base_patch16_224.beitv2/checkpoint-799.pth",
            "BEiTv2 ViT-B/16",
            unmapped=_LOCAL.format(weights="vit_base_patch16_224.beitv2/checkpoint-799.pth") + " (SimMIM loader)",
        ),
        OfficialBackbone(
            "vit_base_patch16",
            "simmim",
            "vit_base_patch16_224.simmim/checkpoint-799.pth",
            "SimMIM ViT-B/16",
            unmapped=_LOCAL.format(weights="vit_base_patch16_224.simmim/checkpoint-799.pth") + " (SimMIM loader)",
        ),
        _torch_hub("dinov2_vitb14", "hub", "facebookresearch/dinov2", "DINOv2 ViT-B/14"),
        _torch_hub("dinov2_vitl14", "hub", "facebookresearch/dinov2", "DINOv2 ViT-L/14"),
        _torch_hub("dinov3_vitb16", "dinov3", "facebookresearch/dinov3", "DINOv3 ViT-B/16"),
        _torch_hub("dinov3_vitl16", "dinov3", "facebookresearch/dinov3", "DINOv3 ViT-L/16"),
        _torch_hub("dinov3_vit7b16", "dinov3", "facebookresearch/dinov3", "DINOv3 ViT-7B/16"),
        _torch_hub("franca_vitl14", "franca", "valeoai/Franca", "Franca ViT-L/14"),
        _torch_hub("capi_vitl14_in1k", "capi", "facebookresearch/capi", "CAPI ViT-L/14"),
        _torch_hub("radio_v2.5-l", "radio", "NVlabs/RADIO", "RADIO ViT-L/16"),
        _torch_hub("radio_v2.5-b", "radio", "NVlabs/RADIO", "RADIO ViT-B/16"),
        _timm("eva02_large_patch14_224.mim_in22k", "EVA02 ViT-L/14"),
        _timm("hiera_base_224.mae", "Hiera ViT-B/16"),
        _timm("hiera_large_224.mae", "Hiera ViT-L/16"),
        _timm("hiera_huge_224.mae", "Hiera ViT-H/16"),
        _open_clip(
            "ViT-L-14",
            "openai",
            "CLIP ViT-L/14",
            "the official run built open_clip's ViT-L-14 with pretrained='openai', whose activation depends on the "
            "open_clip version (2.26 builds it with QuickGELU, as the weights were trained; 2.30 and later with GELU "
            "and only a warning), and the release does not record the version: the tokens the head saw are not known",
        ),
        _open_clip(
            "ViT-B-16",
            "openai",
            "CLIP ViT-B/16",
            "the official ep_all head reads [pooled; patches @ proj], tokens at the projection width, which no "
            "token setting of this library produces",
        ),
        _open_clip_siglip("ViT-L-16-SigLIP-256", "webli", "SigLIP ViT-L/16", "vit_large_patch16_siglip_256.webli", 256),
        _open_clip_siglip(
            "ViT-L-16-SigLIP2-256", "webli", "SigLIP2 ViT-L/16", "vit_large_patch16_siglip_256.v2_webli", 256
        ),
        _open_clip_siglip(
            "ViT-SO400M-14-SigLIP2", "webli", "SigLIP2 SO400M/14", "vit_so400m_patch14_siglip_224.v2_webli", 224
        ),
        _open_clip("PE-Core-L-14-336", "meta", "PE-Core L-14/336"),
        _open_clip("EVA02-E-14", "laion2b_s4b_b115k", "EVA02-CLIP E-14"),
        _open_clip("EVA02-E-14-plus", "laion2b_s9b_b144k", "EVA02-CLIP E-14-plus"),
        _open_clip("ViT-bigG-14-worldwide", "metaclip2_worldwide", "MetaCLIP2 ViT-bigG/14"),
        _open_clip("ViT-bigG-14-worldwide-378", "metaclip2_worldwide", "MetaCLIP2 ViT-bigG/14-378"),
        OfficialBackbone(
            "aimv2-large-patch14-224",
            "aimv2",
            "",
            "AIMv2 ViT-L/14",
            unmapped="the official loader is the aim.v2 package; AIMv2 has no row in the backbone table yet",
        ),
        OfficialBackbone(
            "DiT-XL/2",
            "dit",
            "",
            "DiT-XL/2",
            unmapped="the official tokens pass a VAE whose latents are sampled at random, even at evaluation",
        ),
    ]
}


def official_backbone(meta: dict) -> OfficialBackbone | None:
    """The table row of a released head's ``meta``, or ``None`` for a backbone the table does not know."""
    weights = meta.get("pretrain_tag") or meta.get("finetune") or ""
    return OFFICIAL_BACKBONES.get((meta.get("model", ""), meta.get("loader") or "", weights))


def mapping_table() -> str:
    """The mapping of the official backbones, as the Markdown table of the README."""
    lines = [
        "| official backbone | `model` | loader | weights | Hub backbone | tokens and images |",
        "|---|---|---|---|---|---|",
    ]
    for row in sorted(OFFICIAL_BACKBONES.values(), key=lambda row: (row.hub_id is None, row.name)):
        if row.hub_id:
            target = f"[`{row.hub_id}`](https://huggingface.co/{row.hub_id})"
            tokens = (
                f"{row.token_settings}; {row.image_size} px, {row.transform} transform; checked equal to "
                f"{row.tokens_checked_against}"
            )
        else:
            target, tokens = "unmapped", row.unmapped
        weights = f"`{row.weights}`" if row.weights else ""
        lines.append(f"| {row.name} | `{row.model}` | {row.loader or 'models_vit'} | {weights} | {target} | {tokens} |")
    return "\n".join(lines)


def imagenet_labels() -> dict[int, str]:
    """ImageNet-1k class names by index, in the sorted-WNID order of the ImageFolder the official runs trained on."""
    return {index: lemmas for index, (_, lemmas) in enumerate(json.loads(IMAGENET_CLASSES.read_text()))}


def official_image_processor(image_size: int, transform: str = "imagenet"):
    """The official evaluation transform as an image processor. ``"imagenet"`` (every loader but open_clip): resize
    the short side to ``size * 256 / 224`` (bicubic), centre-crop ``size``, ImageNet mean and std; ``"siglip"``
    (open_clip's SigLIP towers): squash to ``size`` x ``size`` (bicubic), mean and std 0.5."""
    if transform == "siglip":
        return ViTImageProcessor(
            size={"height": image_size, "width": image_size},
            resample=PILImageResampling.BICUBIC,
            image_mean=[0.5] * 3,
            image_std=[0.5] * 3,
        )
    if transform != "imagenet":
        raise ValueError(f"Unknown official transform {transform!r}: 'imagenet' or 'siglip'.")
    return ConvNextImageProcessor(
        size={"shortest_edge": image_size},
        crop_pct=224 / 256,
        resample=PILImageResampling.BICUBIC,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    )
