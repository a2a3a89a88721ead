"""Which backbone each official head was trained on, and where the same weights and tokens are found here.

A released head names its backbone only in the official code's terms (``model``, ``loader``,
``pretrain_tag``/``finetune``). ``OFFICIAL_BACKBONES`` maps each to the Hub repository holding the weights the
official run loaded (the repository its loader downloaded, or that checkpoint's transformers port, with the reason),
and to the token settings that reproduce what the head read (layer, final norm, [CLS] or not, position
interpolation, image size, evaluation transform), or says exactly why the row stays unmapped. The token path of
every mapped row is tested against the official loader's own code on the same random weights
(``tests/test_official_backbones.py``, ``tests/test_ready_made.py``); what such a test cannot see (which of two
published checkpoints, or which activation, the run used) is said in ``unverified``, with the alternative one flag
of ``hf-probe import-official`` away, and settled on real images by ``hf-probe verify``. ``mapping_table`` renders
the table for the README; ``official_image_processor`` is an official evaluation transform as an image processor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from transformers import CLIPImageProcessor, ViTImageProcessor
from transformers.image_utils import PILImageResampling

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_CLASSES = Path(__file__).parent / "imagenet_1k_classes.json"  # [wnid, WordNet lemmas] in ImageFolder order


@dataclass(frozen=True)
class OfficialTransform:
    """An evaluation transform of the official runs.

    Attributes:
        resize: ``"crop"`` (resize the short side to ``int(size * resize_ratio)``, centre-crop ``size``) or
            ``"squash"`` (resize to ``size`` x ``size``).
        resize_ratio: the short side of ``"crop"``, relative to the size.
        resample: the interpolation of the resize.
        mean, std: the normalisation.
        described: how the README and the cards name it.
    """

    resize: str
    resize_ratio: float | None
    resample: PILImageResampling
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    described: str


_BICUBIC, _BILINEAR = PILImageResampling.BICUBIC, PILImageResampling.BILINEAR
# The official ``build_transforms`` for every loader but open_clip, and open_clip's own for its towers (the official
# code takes open_clip's evaluation transform for them: resize mode, interpolation and statistics of the tag).
TRANSFORMS = {
    "imagenet": OfficialTransform(
        "crop", 256 / 224, _BICUBIC, IMAGENET_MEAN, IMAGENET_STD,
        "resize to 256/224 of the size, bicubic, centre crop, ImageNet mean/std",
    ),
    "clip": OfficialTransform(
        "crop", 1.0, _BICUBIC, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD,
        "open_clip's: resize the short side to the size, bicubic, centre crop, OpenAI CLIP mean/std",
    ),
    "clip_squash": OfficialTransform(
        "squash", None, _BICUBIC, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD,
        "open_clip's: squash to the size, bicubic, OpenAI CLIP mean/std",
    ),
    "siglip": OfficialTransform(
        "squash", None, _BICUBIC, (0.5,) * 3, (0.5,) * 3, "open_clip's: squash to the size, bicubic, mean/std 0.5"
    ),
    "pe": OfficialTransform(
        "squash", None, _BILINEAR, (0.5,) * 3, (0.5,) * 3, "open_clip's: squash to the size, bilinear, mean/std 0.5"
    ),
}  # fmt: skip


@dataclass(frozen=True)
class OfficialBackbone:
    """One backbone of the official code and where its weights and tokens are found here.

    Attributes:
        model, loader, weights: the official ``--model``, loader (``""`` for the default ``models_vit``) and weights
            (``pretrain_tag``, else ``finetune``), as a released head's ``meta`` names them.
        name: readable name of the backbone (method and architecture).
        slug: the release folder of the row's head (``tools/export_ep_heads.py``: the log folder's name).
        hub_id: the Hub repository holding the weights the official run loaded, or ``None`` when the row is unmapped.
        model_type: the transformers family of ``hub_id`` (its tokens are the ones tested equal to the official).
        weights_source: why ``hub_id`` holds the weights the official run loaded.
        apply_final_norm: whether the official tokens come after the backbone's final norm.
        feature_layers: the layers (timm: blocks) the official tokens are read from.
        ep_tokens: the tokens an ``ep`` head of the row read: ``"patch"``, or ``"all"`` ([CLS] first) where the
            official wrapper hands every token (open_clip's timm towers: all of ``forward_features``). An ``ep_all``
            head always reads ``"all"``.
        projected_all_tokens: an ``_all`` head read every token through the tower's output projection (open_clip's
            CLIP VisionTransformer: ``[pooled; patches] @ proj``, the probe config's ``project_tokens``).
        image_size: the image size of the official run.
        backbone_image_size: the size the Hub backbone is built for, when it is read at another (DINOv2: 518).
        interpolate_offset: the position interpolation of torch.hub's DINOv2 (the probe config's field).
        activation: the MLP activation pinned on the backbone (open_clip's OpenAI CLIP towers, whose activation
            depends on the open_clip version); ``import_official_release(activation=...)`` replaces it.
        transform: the official evaluation transform (a key of ``TRANSFORMS``).
        all_tokens_unmapped: why an ``_all`` head of the row cannot be mapped, if so.
        tokens_checked_against: the official implementation the tokens were tested equal to.
        unverified: what the token test cannot show for this row (which checkpoint or activation the run used), and
            the alternative; such a row is imported marked unverified until ``hf-probe verify`` passes.
        unmapped: why no Hub backbone is given (only for unmapped rows).
    """

    model: str
    loader: str
    weights: str
    name: str
    slug: str
    hub_id: str | None = None
    model_type: str | None = None
    weights_source: str | None = None
    apply_final_norm: bool | None = None
    feature_layers: tuple[int, ...] = (-1,)
    ep_tokens: str = "patch"
    projected_all_tokens: bool = False
    image_size: int | None = None
    backbone_image_size: int | None = None
    interpolate_offset: float | None = None
    activation: str | None = None
    transform: str = "imagenet"
    all_tokens_unmapped: str | None = None
    tokens_checked_against: str | None = None
    unverified: str | None = None
    unmapped: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.model, self.loader, self.weights)

    def token_selection(self, cls_features: str) -> str:
        """The token selection of a head of this row trained with ``--cls_features cls_features``."""
        return "all" if cls_features.endswith("_all") else self.ep_tokens

    def project_tokens(self, cls_features: str) -> bool:
        """Whether a head of this row trained with ``--cls_features cls_features`` read projected tokens."""
        return self.projected_all_tokens and cls_features.endswith("_all")

    def backbone_overrides(self, activation: str | None = None) -> dict | None:
        """The backbone config fields the probe pins (the activation of an OpenAI CLIP tower)."""
        activation = activation or self.activation
        return {"model_args": {"act_layer": activation}} if activation else None

    @property
    def token_settings(self) -> str:
        settings = [
            f"`feature_layers={list(self.feature_layers)}`",
            f"{'after' if self.apply_final_norm else 'before'} the final norm",
        ]
        if self.ep_tokens == "all":
            settings.append("[CLS] and patches")
        if self.projected_all_tokens:
            settings.append("`_all` heads: [CLS] and patches through the visual projection")
        if self.interpolate_offset is not None:
            settings.append(
                f"torch.hub position interpolation (offset {self.interpolate_offset}) from {self.backbone_image_size} px"
            )
        if self.activation:
            settings.append(f"{self.activation} MLP activation")
        return ", ".join(settings)  # fmt: skip


_MODELS_VIT = "the official models_vit (timm 0.9.16; last block, before the final norm)"
_TIMM = "timm's forward_features as the official TimmWrapper reads it (prefix tokens dropped)"
_TIMM_TAG = (
    "the timm tag the run loaded (`timm.create_model` or `_create_vision_transformer(pretrained=True)`): the "
    "repository of its `hf_hub_id`"
)
_DINOV2 = "facebookresearch/dinov2's torch.hub model, as the official DinoWrapper reads it (get_intermediate_layers)"
_DINOV3 = "facebookresearch/dinov3's torch.hub model, as the official DinoWrapper reads it (get_intermediate_layers)"
_OPEN_CLIP_TIMM = "open_clip's TimmModel trunk.forward_features, as the official CLIPWrapper reads it"
_OPEN_CLIP_VIT = (
    "open_clip's VisionTransformer (tokens after ln_post, unprojected), as the official CLIPWrapper reads it"
)
_OPEN_CLIP_REPO = (
    "the repository open_clip loads the tag from (its `hf_hub`); the timm weights there are timm's conversion of "
    "open_clip's"
)
_BEYOND_CLS = (
    "the official run loaded a local checkpoint ({weights}) that the Beyond [cls] authors converted and that is not "
    "redistributable (results.csv); no Hub repository is known to hold the same weights"
)


def _local(model: str, weights: str, name: str, slug: str, loader: str = "") -> OfficialBackbone:
    return OfficialBackbone(model, loader, weights, name, slug, unmapped=_BEYOND_CLS.format(weights=weights))


def _models_vit(model: str, weights: str, name: str, slug: str) -> OfficialBackbone:
    """A timm tag the official models_vit loaded (``--finetune <tag>``), read through ``TimmWrapperModel``."""
    return OfficialBackbone(
        model, "", weights, name, slug, hub_id=f"timm/{weights}", model_type="timm_wrapper",
        weights_source=_TIMM_TAG, apply_final_norm=False, image_size=224, tokens_checked_against=_MODELS_VIT,
    )  # fmt: skip


def _timm(model: str, name: str, slug: str) -> OfficialBackbone:
    """A backbone the official code built with ``timm.create_model(model, pretrained=True)``: the same Hub weights
    (timm's ``hf_hub_id``), read through ``TimmWrapperModel``. timm's ``forward_features`` of these models carries no
    final norm (EVA02's norm sits after its average pooling, Hiera's in its head) and ends at the last stage."""
    return OfficialBackbone(
        model, "timm", "", name, slug, hub_id=f"timm/{model}", model_type="timm_wrapper", weights_source=_TIMM_TAG,
        apply_final_norm=False, image_size=224, tokens_checked_against=_TIMM,
    )  # fmt: skip


def _dinov2(model: str, size: str, name: str, slug: str) -> OfficialBackbone:
    return OfficialBackbone(
        model, "hub", "", name, slug, hub_id=f"facebook/dinov2-{size}", model_type="dinov2",
        weights_source=f"transformers' port of the torch.hub checkpoint the run loaded ({model}_pretrain.pth)",
        apply_final_norm=True, image_size=224, backbone_image_size=518, interpolate_offset=0.1,
        tokens_checked_against=_DINOV2,
    )  # fmt: skip


def _dinov3(model: str, name: str, slug: str) -> OfficialBackbone:
    return OfficialBackbone(
        model, "dinov3", "", name, slug, hub_id=f"facebook/dinov3-{model.removeprefix('dinov3_')}-pretrain-lvd1689m",
        model_type="dinov3_vit",
        weights_source="transformers' port of the LVD-1689M checkpoint the run loaded (torch.hub with "
        "`--dinov3_weights`; the head's `pretrain`)",
        apply_final_norm=True, image_size=224, tokens_checked_against=_DINOV3,
    )  # fmt: skip


def _open_clip_timm(model, tag, name, slug, timm_weights, image_size, transform, **fields) -> OfficialBackbone:
    """A timm tower of open_clip (``TimmModel``): the official EP read every ``forward_features`` token of its trunk,
    after the final norm. The repository is timm's of the same weights (``timm/<timm_weights>``)."""
    return OfficialBackbone(
        model, "openclip", tag, name, slug, hub_id=f"timm/{timm_weights}", model_type="timm_wrapper",
        apply_final_norm=True, image_size=image_size, transform=transform, tokens_checked_against=_OPEN_CLIP_TIMM,
        **fields,
    )  # fmt: skip


def _open_clip_vit(model, tag, name, slug, timm_weights, image_size, transform, **fields) -> OfficialBackbone:
    """An open_clip VisionTransformer: the official ``ep`` read its patch tokens after ``ln_post``, unprojected, an
    ``ep_all`` every token after ``ln_post`` through ``proj``. timm's CLIP ViT of the same repository is the same
    network (``norm_pre`` = ``ln_pre``, ``norm`` = ``ln_post``, ``head`` = ``proj``)."""
    return OfficialBackbone(
        model, "openclip", tag, name, slug, hub_id=f"timm/{timm_weights}", model_type="timm_wrapper",
        weights_source=_OPEN_CLIP_REPO, apply_final_norm=True, projected_all_tokens=True, image_size=image_size,
        transform=transform, tokens_checked_against=_OPEN_CLIP_VIT, **fields,
    )  # fmt: skip


_SIGLIP_WEIGHTS = (
    "timm's image tower of the same big_vision WebLI release the open_clip tag holds (both are conversions of the one "
    "big_vision checkpoint, not byte-compared here)"
)
_SIGLIP_ALL = (
    "the official ep_all reads open_clip's attention-pooled (MAP) embedding as its [CLS], which no token setting of "
    "this library produces"
)
_OPENAI_ACTIVATION = (
    "open_clip builds `{model}` with pretrained='openai' with QuickGELU (as OpenAI trained it) in versions 2.26-2.28 "
    "and with GELU, and only a warning, from 2.29 (3.3.0 here does); the release records no open_clip version. GELU "
    "is mapped; `--clip_activation quick_gelu` imports the other"
)
_EVA02_CLIP = (
    "open_clip loaded {tag} from `timm/{open_clip_repo}` (open_clip format only, which transformers cannot load); "
    "timm's repository of the architecture, `{hub}`, is mapped, but timm does not state which EVA-CLIP checkpoint "
    "it converted (its config's comments name both). `--backbone {slug}={other}` imports the other"
)
_PE = (
    "open_clip loaded the tag from `timm/PE-Core-L-14-336` (open_clip format only, which transformers cannot load); "
    "timm's conversion of facebook/PE-Core-L14-336 is mapped, not byte-compared with it. `--backbone {slug}=REPO` "
    "imports another"
)
_IJEPA = (
    "the run loaded a local copy (vit_huge_patch14_224.ijepa/checkpoint-799.pth, converted by the Beyond [cls] "
    "authors) of the I-JEPA ViT-H/14 IN-1K release; facebook/ijepa_vith14_1k is transformers' port of that release's "
    "context encoder (`encoder`), and the local copy may hold its target encoder (`target_encoder`) instead. "
    "`--backbone ijepa_vith=REPO` imports a port of the other"
)
_TORCH_HUB_ONLY = "the official loader is torch.hub ({repo}); {why}"

OFFICIAL_BACKBONES: dict[tuple[str, str, str], OfficialBackbone] = {
    row.key: row
    for row in [
        _models_vit("vit_base_patch16", "vit_base_patch16_224.mae", "MAE ViT-B/16", "mae_base"),
        _models_vit("vit_large_patch16", "vit_large_patch16_224.mae", "MAE ViT-L/16", "mae_vitl"),
        _models_vit("vit_base_patch16", "vit_base_patch16_224.dino", "DINO ViT-B/16", "dino_vitb"),
        OfficialBackbone(
            "vit_huge_patch14", "", "vit_huge_patch14_224.ijepa/checkpoint-799.pth", "I-JEPA ViT-H/14", "ijepa_vith",
            hub_id="facebook/ijepa_vith14_1k", model_type="ijepa",
            weights_source="transformers' port of the I-JEPA ViT-H/14 IN-1K release (IN1K-vit.h.14-300e)",
            apply_final_norm=False, image_size=224, tokens_checked_against=_MODELS_VIT + ", built --no_cls_token",
            unverified=_IJEPA,
        ),
        _local("vit_small_patch16", "vit_small_patch16_224.mae/checkpoint-799.pth", "MAE ViT-S/16", "mae_vits"),
        _local("vit_base_patch16", "vit_base_patch16_224.ibot/checkpoint-799.pth", "iBOT ViT-B/16", "ibot_vitb"),
        _local("vit_large_patch16", "vit_large_patch16_224.ibot/checkpoint-799.pth", "iBOT ViT-L/16", "ibot_vitl"),
        _local(
            "vit_base_patch16", "vit_base_patch16_224.maskfeat/checkpoint-799.pth", "MaskFeat ViT-B/16",
            "maskfeat_vitb",
        ),
        _local(
            "vit_large_patch16", "vit_large_patch16_224.maskfeat/checkpoint-799.pth", "MaskFeat ViT-L/16",
            "maskfeat_large",
        ),
        _local("vit_base_patch16", "vit_base_patch16_224.mocov3/checkpoint-799.pth", "MoCov3 ViT-B/16", "mocov3_vitb"),
        _local(
            "vit_base_patch16", "vit_base_patch16_224.beitv2/checkpoint-799.pth", "BEiTv2 ViT-B/16", "beitv2_vitb",
            loader="simmim",
        ),
        _local(
            "vit_base_patch16", "vit_base_patch16_224.simmim/checkpoint-799.pth", "SimMIM ViT-B/16", "simmim_vitb",
            loader="simmim",
        ),
        _dinov2("dinov2_vitb14", "base", "DINOv2 ViT-B/14", "dinov2_vitb"),
        _dinov2("dinov2_vitl14", "large", "DINOv2 ViT-L/14", "dinov2_vitl"),
        _dinov3("dinov3_vitb16", "DINOv3 ViT-B/16", "dinov3_vitb"),
        _dinov3("dinov3_vitl16", "DINOv3 ViT-L/16", "dinov3_vitl"),
        _dinov3("dinov3_vit7b16", "DINOv3 ViT-7B/16", "dinov3_vit7b"),
        OfficialBackbone(
            "aimv2-large-patch14-224", "aimv2", "", "AIMv2 ViT-L/14", "aimv2_vitl",
            hub_id="apple/aimv2-large-patch14-224", model_type="aimv2_vision_model",
            weights_source="the repository the official loader (aim.v2 `load_pretrained`) downloads, at revision "
            "ac764a25 there; transformers reads its main revision",
            apply_final_norm=True, image_size=224,
            tokens_checked_against="apple/ml-aim's aim.v2 torch model, as the official AIMv2Wrapper reads it",
        ),
        OfficialBackbone(
            "franca_vitl14", "franca", "", "Franca ViT-L/14", "franca_laion",
            unmapped=_TORCH_HUB_ONLY.format(repo="valeoai/Franca", why="no transformers or timm port of Franca exists"),
        ),
        OfficialBackbone(
            "capi_vitl14_in1k", "capi", "", "CAPI ViT-L/14", "capi_vitl",
            unmapped=_TORCH_HUB_ONLY.format(
                repo="facebookresearch/capi", why="no transformers or timm port of CAPI exists"
            ),
        ),
        *(
            OfficialBackbone(
                f"radio_v2.5-{size}", "radio", "", f"RADIO ViT-{size.upper()}/16", f"radio_v25_{size}",
                unmapped=_TORCH_HUB_ONLY.format(
                    repo="NVlabs/RADIO, version radio_v2.5",
                    why="transformers' radio family and timm's radio models hold C-RADIO v3/v4, other weights",
                ),
            )
            for size in ("l", "b")
        ),
        _timm("eva02_large_patch14_224.mim_in22k", "EVA02 ViT-L/14", "eva02_vitl_mim"),
        _timm("hiera_base_224.mae", "Hiera ViT-B/16", "hiera_base"),
        _timm("hiera_large_224.mae", "Hiera ViT-L/16", "hiera_large"),
        _timm("hiera_huge_224.mae", "Hiera ViT-H/16", "hiera_huge"),
        _open_clip_vit(
            "ViT-L-14", "openai", "CLIP ViT-L/14", "clip_vitl", "vit_large_patch14_clip_224.openai", 224, "clip",
            activation="gelu", unverified=_OPENAI_ACTIVATION.format(model="ViT-L-14"),
        ),
        _open_clip_vit(
            "ViT-B-16", "openai", "CLIP ViT-B/16", "clip_vitb16", "vit_base_patch16_clip_224.openai", 224, "clip",
            activation="gelu", unverified=_OPENAI_ACTIVATION.format(model="ViT-B-16"),
        ),
        _open_clip_vit(
            "ViT-bigG-14-worldwide", "metaclip2_worldwide", "MetaCLIP2 ViT-bigG/14", "metaclip2_bigg",
            "vit_gigantic_patch14_clip_224.metaclip2_worldwide", 224, "clip",
        ),
        _open_clip_vit(
            "ViT-bigG-14-worldwide-378", "metaclip2_worldwide", "MetaCLIP2 ViT-bigG/14-378", "metaclip2_bigg378",
            "vit_gigantic_patch14_clip_378.metaclip2_worldwide", 378, "clip_squash",
        ),
        _open_clip_timm(
            "ViT-L-16-SigLIP-256", "webli", "SigLIP ViT-L/16", "siglip_vitl", "vit_large_patch16_siglip_256.webli",
            256, "siglip", weights_source=_SIGLIP_WEIGHTS, all_tokens_unmapped=_SIGLIP_ALL,
        ),
        _open_clip_timm(
            "ViT-L-16-SigLIP2-256", "webli", "SigLIP2 ViT-L/16", "siglip2_vitl",
            "vit_large_patch16_siglip_256.v2_webli", 256, "siglip", weights_source=_SIGLIP_WEIGHTS,
            all_tokens_unmapped=_SIGLIP_ALL,
        ),
        _open_clip_timm(
            "ViT-SO400M-14-SigLIP2", "webli", "SigLIP2 SO400M/14", "siglip2_so400m",
            "vit_so400m_patch14_siglip_224.v2_webli", 224, "siglip", weights_source=_SIGLIP_WEIGHTS,
            all_tokens_unmapped=_SIGLIP_ALL,
        ),
        _open_clip_timm(
            "EVA02-E-14", "laion2b_s4b_b115k", "EVA02-CLIP E-14", "eva02_e14",
            "eva02_enormous_patch14_clip_224.laion2b", 224, "clip", ep_tokens="all",
            weights_source="timm's repository of the open_clip tag's architecture (see unverified)",
            unverified=_EVA02_CLIP.format(
                tag="laion2b_s4b_b115k", open_clip_repo="eva02_enormous_patch14_clip_224.laion2b_s4b_b115k",
                hub="timm/eva02_enormous_patch14_clip_224.laion2b", slug="eva02_e14",
                other="timm/eva02_enormous_patch14_clip_224.laion2b_plus",
            ),
        ),
        _open_clip_timm(
            "EVA02-E-14-plus", "laion2b_s9b_b144k", "EVA02-CLIP E-14-plus", "eva02_e14_plus",
            "eva02_enormous_patch14_clip_224.laion2b_plus", 224, "clip", ep_tokens="all",
            weights_source="timm's repository of the open_clip tag's architecture (see unverified)",
            unverified=_EVA02_CLIP.format(
                tag="laion2b_s9b_b144k", open_clip_repo="eva02_enormous_patch14_plus_clip_224.laion2b_s9b_b144k",
                hub="timm/eva02_enormous_patch14_clip_224.laion2b_plus", slug="eva02_e14_plus",
                other="timm/eva02_enormous_patch14_clip_224.laion2b",
            ),
        ),
        _open_clip_timm(
            "PE-Core-L-14-336", "meta", "PE-Core L-14/336", "pe_core_l336", "vit_pe_core_large_patch14_336.fb", 336,
            "pe", ep_tokens="all", weights_source="timm's conversion of the checkpoint the open_clip tag holds",
            unverified=_PE.format(slug="pe_core_l336"),
        ),
        OfficialBackbone(
            "DiT-XL/2", "dit", "", "DiT-XL/2", "dit_xl",
            unmapped="no head in the release (manifest `missing`); the official tokens also pass a VAE whose latents "
            "are sampled at random, even at evaluation",
        ),
    ]
}  # fmt: skip


def official_backbone(meta: dict) -> OfficialBackbone | None:
    """The table row of a released head's ``meta``, or ``None`` for a backbone the table does not know."""
    weights = meta.get("pretrain_tag") or meta.get("finetune") or ""
    return OFFICIAL_BACKBONES.get((meta.get("model", ""), meta.get("loader") or "", weights))


def mapping_table() -> str:
    """The mapping of the official backbones, as the Markdown table of the README."""
    lines = [
        "| official backbone | `model` | loader | weights | Hub backbone | why these weights | tokens and images | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(
        OFFICIAL_BACKBONES.values(), key=lambda row: (row.hub_id is None, row.unverified is not None, row.name)
    ):
        weights = f"`{row.weights}`" if row.weights else ""
        if row.hub_id is None:
            lines.append(
                f"| {row.name} | `{row.model}` | {row.loader or 'models_vit'} | {weights} | unmapped | | | {row.unmapped} |"
            )
            continue
        tokens = (
            f"{row.token_settings}; {row.image_size} px, {TRANSFORMS[row.transform].described}; checked equal to "
            f"{row.tokens_checked_against}"
        )
        status = f"unverified: {row.unverified}; run `hf-probe verify`" if row.unverified else "token test"
        if row.all_tokens_unmapped:
            status += f" (an `ep_all` head: unmapped, {row.all_tokens_unmapped})"
        lines.append(
            f"| {row.name} | `{row.model}` | {row.loader or 'models_vit'} | {weights} | "
            f"[`{row.hub_id}`](https://huggingface.co/{row.hub_id}) | {row.weights_source} | {tokens} | {status} |"
        )
    return "\n".join(lines)  # fmt: skip


def imagenet_labels() -> dict[int, str]:
    """ImageNet-1k class names by index, in the sorted-WNID order of the ImageFolder the official runs trained on."""
    return {index: lemmas for index, (_, lemmas) in enumerate(json.loads(IMAGENET_CLASSES.read_text()))}


def imagenet_wnids() -> list[str]:
    """The ImageNet-1k WNIDs by class index (the folder names of an ImageNet ImageFolder)."""
    return [wnid for wnid, _ in json.loads(IMAGENET_CLASSES.read_text())]


def official_image_processor(image_size: int, transform: str = "imagenet") -> CLIPImageProcessor | ViTImageProcessor:
    """The official evaluation transform ``transform`` (a key of ``TRANSFORMS``) at ``image_size``, as an image
    processor: a ``"crop"`` resize takes the short side to ``int(size * resize_ratio)`` (as the official
    ``Resize(int(input_size * 256 / 224))``) then crops the centre, a ``"squash"`` one takes the image to ``size`` x
    ``size``."""
    if transform not in TRANSFORMS:
        raise ValueError(f"Unknown official transform {transform!r}: one of {sorted(TRANSFORMS)}.")
    spec = TRANSFORMS[transform]
    common = dict(resample=spec.resample, image_mean=list(spec.mean), image_std=list(spec.std))
    if spec.resize == "squash":
        return ViTImageProcessor(size={"height": image_size, "width": image_size}, **common)
    short_side = int(image_size * spec.resize_ratio)
    return CLIPImageProcessor(size={"shortest_edge": short_side}, crop_size=image_size, **common)
