"""Backbone adaptation: which tokens a frozen vision model hands the probe, one row per family.

Families differ in what decides what a probe reads: where the per-layer states live (``hidden_states`` sequences
``[B, N, C]`` for ViTs, feature maps ``[B, C, H, W]`` for CNNs and ViTDet, per-stage ``reshaped_hidden_states``
for Swin-like models, NaFlex patch sequences with padding for SigLIP2, timm's ``forward_intermediates`` for
``TimmWrapperModel``), how many leading tokens precede the patches ([CLS], distillation, registers), which module
is the final norm and whether the paper's protocol reads tokens before or after it, and how to make the model
deterministic (ViT-MAE shuffles its patches). Video families (V-JEPA 2, VideoMAE, ViViT, TimeSformer) read clips
``[B, T, 3, H, W]`` and cut them into tubelets: their row says how (``VideoLayout``); an image family reads clips frame
by frame when asked (``TokenReader(frame_by_frame=True)``). ``FAMILIES`` holds these facts;
``TokenReader`` applies them. Every state becomes tokens ``[B, N, C]`` (maps are flattened row-major, a clip's
space-time tokens frame after frame) with its grid, ``(rows, columns)`` for an image and ``(frames, rows, columns)``
for a clip; a new family is one row, and a family not in the table still works (its states are read as they come,
leading tokens counted from the grid).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, PreTrainedConfig, PreTrainedModel

from .probes.patch_grid import as_pair

# Where a family's per-layer states come from.
STATE_SOURCES = ("hidden_states", "reshaped_hidden_states", "naflex", "timm")


def _no_forward_kwargs(config: PreTrainedConfig, pixel_values: torch.Tensor) -> dict:
    return {}


def _encoder_only(config: PreTrainedConfig, pixel_values: torch.Tensor) -> dict:
    """V-JEPA 2's model also runs its predictor by default, which a probe never reads."""
    return {"skip_predictor": True}


def _identity_patch_order(config: PreTrainedConfig, pixel_values: torch.Tensor) -> dict:
    """ViT-MAE draws a random patch permutation on every call, even at mask_ratio=0: ask for the identity order."""
    height, width = patch_grid(config, pixel_values)
    noise = torch.arange(height * width, device=pixel_values.device, dtype=torch.float32)
    return {"noise": noise.expand(pixel_values.shape[0], -1)}


def _tubelet_of_patches(config: PreTrainedConfig) -> tuple[int, int, int]:
    return (int(config.tubelet_size), *as_pair(config.patch_size))


@dataclass(frozen=True)
class VideoLayout:
    """How a video family cuts clips ``[B, T, 3, H, W]`` into space-time tokens ``[B, prefix + T' * H' * W', C]``.

    Attributes:
        frames_field: config field holding the frames per clip the model is built for.
        size_field: config field holding the frame size the model reads.
        tubelet: ``(frames, height, width)`` of one tubelet (one token) from the config.
        fixed_frames: clips must have exactly ``frames_field`` frames (temporal position embeddings, or layers that
            read the count from the config); ``False`` for V-JEPA 2 (rotary positions), which reads any multiple of
            its tubelet.
        frames_last: the model orders its tokens (rows, columns, frames) (TimeSformer); they are reordered frame
            after frame, as the other families give them.
    """

    frames_field: str = "num_frames"
    size_field: str = "image_size"
    tubelet: Callable[[PreTrainedConfig], tuple[int, int, int]] = _tubelet_of_patches
    fixed_frames: bool = True
    frames_last: bool = False

    def native_frames(self, config: PreTrainedConfig) -> int:
        return int(getattr(config, self.frames_field))

    def frame_size(self, config: PreTrainedConfig) -> tuple[int, int]:
        return as_pair(getattr(config, self.size_field))

    def token_grid(
        self, config: PreTrainedConfig, num_frames: int, size: tuple[int, int] | None = None
    ) -> tuple[int, int, int]:
        """``(frames, rows, columns)`` of the tokens of a clip of ``num_frames`` frames (of the native size)."""
        frames, patch_height, patch_width = self.tubelet(config)
        height, width = size or self.frame_size(config)
        return num_frames // frames, height // patch_height, width // patch_width

    def check_clip(self, config: PreTrainedConfig, pixel_values: torch.Tensor) -> None:
        """Refuse clips the model would misread (other frame counts, frames of another size) with what to do."""
        num_frames, height, width = pixel_values.shape[1], *pixel_values.shape[-2:]
        native, size, tubelet = self.native_frames(config), self.frame_size(config), self.tubelet(config)[0]
        problems = []
        if self.fixed_frames and num_frames != native:
            problems.append(f"{num_frames} frames, but it reads exactly {native} (its config's {self.frames_field})")
        elif num_frames < tubelet or num_frames % tubelet:
            problems.append(f"{num_frames} frames, which do not split into tubelets of {tubelet} frames")
        # every video family's positions are laid out for this size (V-JEPA 2's rotary ones too: from its config)
        if (height, width) != size:
            problems.append(
                f"frames of {height}x{width} pixels, but it reads {size[0]}x{size[1]} (its {self.size_field})"
            )
        if problems:
            raise ValueError(
                f"This {config.model_type!r} backbone was given clips of "
                + "; and ".join(problems)
                + ". Sample clips it reads (hf_efficient_probing.video) and prepare them with its video processor."
            )


@dataclass(frozen=True)
class BackboneFamily:
    """Token layout of one backbone family.

    Attributes:
        model_type: ``config.model_type`` of the backbone (the vision config for CLIP/SigLIP).
        states: where the per-layer states come from (``STATE_SOURCES``): the output's ``hidden_states`` or
            ``reshaped_hidden_states`` (per stage), ``"naflex"`` (SigLIP2: patch sequences, a padding mask and one
            grid per image) or ``"timm"`` (``forward_intermediates`` of the wrapped timm model, by block index).
        patch_sequence: the states are ViT-style sequences ``[B, prefix + h * w, C]`` on the ``config.patch_size``
            grid, with exactly ``num_prefix_tokens`` leading tokens (checked on every call).
        appends_last_hidden_state: ``last_hidden_state`` is a further state, not among ``hidden_states`` (the final
            1x1 convolution of MobileNet, MobileViT and EfficientNet).
        channels_last: 4-D states are ``[B, H, W, C]`` (Hiera) rather than ``[B, C, H, W]``.
        has_cls_token: whether the first token is a [CLS] token.
        extra_prefix_tokens: number of tokens between [CLS] and the patches (distillation, registers).
        final_norm: attribute (dotted path) of the backbone that holds its final norm, or ``None``.
        apply_final_norm: whether the paper's protocol reads the tokens after that norm.
        interpolates_pos_encoding: whether ``forward`` takes ``interpolate_pos_encoding`` (``False`` for families
            that always interpolate, or never can).
        fixed_image_size: whether the position embeddings fit the native image size only (a learned table the model
            cannot interpolate, as AIMv2's but for its "native" variant); other sizes are refused clearly.
        offset_interpolation: whether the reader can interpolate the position embeddings as torch.hub's DINOv2
            does (``interpolate_offset``; see `offset_position_interpolation`).
        projection: attribute path of the output projection ``project_tokens`` applies to every token (timm: the
            model's ``head``, a CLIP tower's visual projection, kept by loading the backbone with
            ``AutoModelForImageClassification``), or ``None``.
        config_overrides: settings forced on the backbone config so that it yields every patch deterministically.
        forward_kwargs: extra inputs of ``forward`` for the same purpose.
        input_name: the name ``forward`` takes the pixels by (V-JEPA 2: ``pixel_values_videos``).
        video: how a video family cuts clips into tokens; ``None`` for image families.
    """

    model_type: str
    states: str = "hidden_states"
    patch_sequence: bool = True
    appends_last_hidden_state: bool = False
    channels_last: bool = False
    has_cls_token: bool = True
    extra_prefix_tokens: Callable[[PreTrainedConfig], int] = lambda config: 0
    final_norm: str | None = "layernorm"
    apply_final_norm: bool = False
    interpolates_pos_encoding: bool = True
    fixed_image_size: Callable[[PreTrainedConfig], bool] = lambda config: False
    offset_interpolation: bool = False
    projection: str | None = None
    config_overrides: dict = field(default_factory=dict)
    forward_kwargs: Callable[[PreTrainedConfig, torch.Tensor], dict] = _no_forward_kwargs
    input_name: str = "pixel_values"
    video: VideoLayout | None = None

    def num_prefix_tokens(self, config: PreTrainedConfig) -> int:
        return int(self.has_cls_token) + self.extra_prefix_tokens(config)


def _feature_maps(model_type: str, **kwargs) -> BackboneFamily:
    """A CNN-like family: ``hidden_states`` are ``[B, C, H, W]`` maps (embeddings first, then each stage)."""
    return BackboneFamily(
        model_type, patch_sequence=False, has_cls_token=False, interpolates_pos_encoding=False, **kwargs
    )


def _stages(model_type: str, **kwargs) -> BackboneFamily:
    """A hierarchical family reporting one state per stage, each on its own grid and with its own width."""
    kwargs.setdefault("states", "reshaped_hidden_states")
    return _feature_maps(model_type, **kwargs)


FAMILIES: dict[str, BackboneFamily] = {
    family.model_type: family
    for family in [
        BackboneFamily("vit"),
        BackboneFamily("vit_mae", config_overrides={"mask_ratio": 0.0}, forward_kwargs=_identity_patch_order),
        BackboneFamily("vit_msn"),
        BackboneFamily("deit", extra_prefix_tokens=lambda config: 1),
        BackboneFamily("beit"),
        BackboneFamily("data2vec-vision"),
        BackboneFamily("ijepa", has_cls_token=False),
        BackboneFamily("dinov2", apply_final_norm=True, interpolates_pos_encoding=False, offset_interpolation=True),
        BackboneFamily(
            "dinov2_with_registers",
            extra_prefix_tokens=lambda config: config.num_register_tokens,
            apply_final_norm=True,
            interpolates_pos_encoding=False,
            offset_interpolation=True,
        ),
        BackboneFamily(
            "dinov3_vit",
            extra_prefix_tokens=lambda config: config.num_register_tokens,
            final_norm="norm",
            apply_final_norm=True,
            interpolates_pos_encoding=False,
        ),
        BackboneFamily(
            "aimv2_vision_model",
            has_cls_token=False,
            final_norm="rms_norm",
            apply_final_norm=True,
            interpolates_pos_encoding=False,
            fixed_image_size=lambda config: not config.is_native,
        ),
        BackboneFamily("clip_vision_model", final_norm="post_layernorm", apply_final_norm=True),
        BackboneFamily("siglip_vision_model", has_cls_token=False, final_norm="post_layernorm", apply_final_norm=True),
        BackboneFamily(
            "siglip2_vision_model",
            states="naflex",
            patch_sequence=False,
            has_cls_token=False,
            final_norm="post_layernorm",
            apply_final_norm=True,
            interpolates_pos_encoding=False,
        ),
        _feature_maps("convnext"),
        _feature_maps("convnextv2"),
        _feature_maps("resnet", final_norm=None),
        _feature_maps("regnet", final_norm=None),
        _feature_maps("efficientnet", final_norm=None, appends_last_hidden_state=True),
        _feature_maps("mobilenet_v2", final_norm=None, appends_last_hidden_state=True),
        _feature_maps("mobilevit", final_norm=None, appends_last_hidden_state=True),
        _feature_maps("vitdet", final_norm=None),
        _stages("swin"),
        _stages("swinv2"),
        _stages("focalnet"),
        _stages("hiera", channels_last=True, final_norm=None),
        _stages("pvt", states="hidden_states", final_norm=None),  # sequences per stage; the last leads with a [CLS]
        _stages("levit", states="hidden_states", final_norm=None),  # sequences per stage
        _stages("timm_wrapper", states="timm", final_norm="norm", projection="timm_model.head"),  # timm's own norm
        # Video: space-time tokens. V-JEPA 2's eval reads the encoder's final-normed output; the others, like their
        # image counterparts (MAE, ViT), the last block's. VideoMAE's ``layernorm`` is None with use_mean_pooling.
        BackboneFamily(
            "vjepa2",
            has_cls_token=False,
            final_norm="encoder.layernorm",
            apply_final_norm=True,
            interpolates_pos_encoding=False,
            forward_kwargs=_encoder_only,
            input_name="pixel_values_videos",
            video=VideoLayout(frames_field="frames_per_clip", size_field="crop_size", fixed_frames=False),
        ),
        BackboneFamily("videomae", has_cls_token=False, interpolates_pos_encoding=False, video=VideoLayout()),
        # ViViT's interpolate_pos_encoding lays its positions on one square frame grid: never asked for
        BackboneFamily(
            "vivit",
            interpolates_pos_encoding=False,
            video=VideoLayout(tubelet=lambda config: tuple(int(size) for size in config.tubelet_size)),
        ),
        BackboneFamily(
            "timesformer",
            interpolates_pos_encoding=False,
            video=VideoLayout(tubelet=lambda config: (1, *as_pair(config.patch_size)), frames_last=True),
        ),
    ]
}
VIDEO_FAMILIES = tuple(name for name, family in FAMILIES.items() if family.video is not None)

# Multi-modal configs whose vision tower is what a probe reads.
_VISION_TOWERS = {
    "clip": "vision_config",
    "siglip": "vision_config",
    "siglip2": "vision_config",
    "aimv2": "vision_config",
}


def vision_config(config: PreTrainedConfig) -> PreTrainedConfig:
    """The config of the vision tower: ``config.vision_config`` for CLIP/SigLIP, the config itself otherwise."""
    key = _VISION_TOWERS.get(config.model_type)
    return getattr(config, key) if key else config


def backbone_family(config: PreTrainedConfig) -> BackboneFamily:
    """The family row of a backbone config; unknown families get a generic row (states read as they come)."""
    return FAMILIES.get(config.model_type) or BackboneFamily(
        config.model_type, patch_sequence=False, has_cls_token=False, final_norm=None
    )


def patch_grid(config: PreTrainedConfig, pixel_values: torch.Tensor) -> tuple[int, int]:
    """``(rows, columns)`` of ``config.patch_size`` patches for images of this size."""
    patch_h, patch_w = as_pair(config.patch_size)
    return pixel_values.shape[-2] // patch_h, pixel_values.shape[-1] // patch_w


def prepare_backbone_config(config: PreTrainedConfig) -> PreTrainedConfig:
    """Apply the family's overrides (e.g. no MAE masking) and make ``hidden_states[-1]`` the pre-norm tokens."""
    config = vision_config(config)
    for key, value in backbone_family(config).config_overrides.items():
        setattr(config, key, value)
    config.tie_last_hidden_states = False
    return config


def prepare_loaded_backbone(backbone: PreTrainedModel) -> PreTrainedModel:
    """The same settings for a model the user loaded: its modules read the (shared) config at every call, so a
    ``ViTMAEModel.from_pretrained(...)`` stops masking 75 % of its patches."""
    prepare_backbone_config(backbone.config)
    return backbone


def _backbone_class(config: PreTrainedConfig, project_tokens: bool):
    """The Auto class of a backbone: with ``project_tokens``, the one that keeps the output projection (timm's
    ``head``, which ``TimmWrapperModel`` drops)."""
    if not project_tokens:
        return AutoModel
    family = backbone_family(vision_config(config))
    if family.projection is None:
        supported = sorted(name for name, row in FAMILIES.items() if row.projection)
        raise ValueError(
            f"project_tokens reads the tokens through the backbone's output projection, which only {supported} "
            f"backbones expose here, not {family.model_type!r}."
        )
    return AutoModelForImageClassification


def build_backbone(config: PreTrainedConfig, project_tokens: bool = False) -> PreTrainedModel:
    """A randomly initialised backbone from its config (with its output projection for ``project_tokens``)."""
    return _backbone_class(config, project_tokens).from_config(prepare_backbone_config(config))


def apply_backbone_overrides(config: PreTrainedConfig, overrides: dict | None) -> PreTrainedConfig:
    """Set ``overrides`` (config field -> value; a dict value updates a dict field, such as a timm model's
    ``model_args``) on the vision config, e.g. the activation a checkpoint was trained with when its Hub config
    names another."""
    config = vision_config(config)
    for key, value in (overrides or {}).items():
        current = getattr(config, key, None)
        setattr(config, key, {**current, **value} if isinstance(value, dict) and isinstance(current, dict) else value)
    return config


def load_backbone(
    name_or_path: str,
    revision: str | None = None,
    overrides: dict | None = None,
    project_tokens: bool = False,
    **hub_kwargs,
) -> PreTrainedModel:
    """Load pretrained backbone weights (for CLIP/SigLIP checkpoints, only the vision tower), its config first
    changed by ``overrides`` (`apply_backbone_overrides`), with its output projection for ``project_tokens``."""
    config_kwargs = {key: value for key, value in hub_kwargs.items() if key != "dtype"}  # a config field otherwise
    config = AutoConfig.from_pretrained(name_or_path, revision=revision, **config_kwargs)
    config = prepare_backbone_config(apply_backbone_overrides(config, overrides))
    auto_class = _backbone_class(config, project_tokens)
    return auto_class.from_pretrained(name_or_path, config=config, revision=revision, **hub_kwargs)


def token_width(config: PreTrainedConfig, feature_layers: list[int], project_tokens: bool = False) -> int:
    """The width of the tokens read from ``feature_layers`` (concatenated), or through the output projection: a
    timm model's ``num_classes`` (``num_labels``), the width of its ``head``."""
    if project_tokens:
        return vision_config(config).num_labels
    return layer_states(config, feature_layers)[0].width * len(feature_layers)


def load_backbone_adapter(backbone: PreTrainedModel, name_or_path: str, subfolder: str, **hub_kwargs) -> nn.Module:
    """``backbone`` with the `peft` adapter saved in ``name_or_path/subfolder`` (kept unmerged, so that saving the
    probe again saves the adapter again)."""
    try:
        from peft import PeftModel
    except ImportError as error:
        raise ImportError(
            f"{name_or_path} holds a backbone adapter ({subfolder}/) trained with peft: pip install peft."
        ) from error
    return PeftModel.from_pretrained(backbone, str(name_or_path), subfolder=subfolder, **hub_kwargs)


def offset_position_interpolation(
    embeddings_module: nn.Module, offset: float, embeddings: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Position embeddings for ``height`` x ``width`` images, interpolated as torch.hub's DINOv2
    (``DinoVisionTransformer.interpolate_pos_encoding`` with ``interpolate_offset``, no antialias): bicubic with
    ``scale_factor=(rows + offset) / M`` per axis on the ``M x M`` table, where transformers' DINOv2 asks for
    ``size=(rows, columns)``, which places the samples elsewhere. Has the signature of transformers'
    ``Dinov2Embeddings.interpolate_pos_encoding`` (after ``embeddings_module`` and ``offset``), which it replaces."""
    table = embeddings_module.position_embeddings
    patch_height, patch_width = as_pair(embeddings_module.patch_embeddings.patch_size)
    rows, columns = height // patch_height, width // patch_width
    num_positions = table.shape[1] - 1
    if rows * columns == num_positions and height == width:
        return table
    side = math.isqrt(num_positions)
    patch_table = table[:, 1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patch_table = F.interpolate(
        patch_table, scale_factor=((rows + offset) / side, (columns + offset) / side), mode="bicubic", antialias=False
    )
    if tuple(patch_table.shape[-2:]) != (rows, columns):
        raise ValueError(f"interpolate_offset={offset} does not give a {rows}x{columns} grid from {side}x{side}.")
    patch_table = patch_table.permute(0, 2, 3, 1).reshape(1, rows * columns, -1)
    return torch.cat([table[:, :1].float(), patch_table], dim=1).to(embeddings.dtype)


@dataclass
class Tokens:
    """Tokens a probe reads: ``tokens`` ``[B, N, D]`` of which the first ``num_prefix_tokens`` are [CLS], on a
    ``grid_size`` grid: ``(rows, columns)`` of an image's patches, ``(frames, rows, columns)`` of a clip's space-time
    tokens (frame after frame), ``None`` when images of a batch have different grids (NaFlex); and ``mask``
    ``[B, N]`` (``True`` for real tokens) when some are padding."""

    tokens: torch.Tensor
    num_prefix_tokens: int
    grid_size: tuple[int, ...] | None
    mask: torch.Tensor | None = None


@dataclass(frozen=True)
class State:
    """One per-layer state of a backbone at its native image (or clip) size: its token width and grid."""

    width: int
    grid_size: tuple[int, ...] | None
    num_prefix_tokens: int = 0

    def __str__(self) -> str:
        grid = "x".join(map(str, self.grid_size)) if self.grid_size else "variable"
        prefix = f", {self.num_prefix_tokens} prefix tokens" if self.num_prefix_tokens else ""
        return f"width {self.width}, grid {grid}{prefix}"


def native_image_size(config: PreTrainedConfig, backbone: nn.Module | None = None) -> tuple[int, int]:
    """The image (or frame) size the backbone was built for (224 when it does not say)."""
    video = backbone_family(config).video
    if video is not None:
        return video.frame_size(config)
    size = getattr(config, "image_size", None)
    timm_model = getattr(backbone, "timm_model", None)
    if timm_model is not None:
        size = getattr(getattr(timm_model, "patch_embed", None), "img_size", None)
        size = size or timm_model.pretrained_cfg.get("input_size", (3, 224, 224))[1:]
    return as_pair(size or 224)


def naflex_patches(pixel_values: torch.Tensor, patch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[B, 3, H, W]`` images as SigLIP2's NaFlex inputs, as its image processor lays them out: patches
    ``[B, h * w, p * p * 3]`` (row-major, channels last within a patch), an all-ones mask and the ``(h, w)`` grid."""
    batch, channels, height, width = pixel_values.shape
    rows, columns = height // patch_size, width // patch_size
    patches = pixel_values[..., : rows * patch_size, : columns * patch_size]
    patches = patches.reshape(batch, channels, rows, patch_size, columns, patch_size).permute(0, 2, 4, 3, 5, 1)
    patches = patches.reshape(batch, rows * columns, patch_size * patch_size * channels)
    mask = torch.ones(batch, rows * columns, dtype=torch.long, device=pixel_values.device)
    shapes = torch.tensor([[rows, columns]] * batch, dtype=torch.long, device=pixel_values.device)
    return patches, mask, shapes


def _sequence_grid(num_tokens: int, image_size: tuple[int, int]) -> tuple[int, int]:
    """The grid of a stage's sequence ``[B, N, C]`` whose stride the model does not report: the first stride ``s``
    whose ``ceil(H/s) x ceil(W/s)`` grid fits in ``N`` tokens (the rest are leading tokens, e.g. PVT's [CLS])."""
    height, width = image_size
    for stride in range(1, max(height, width) + 1):
        grid = (math.ceil(height / stride), math.ceil(width / stride))
        if grid[0] * grid[1] <= num_tokens:
            return grid
    raise ValueError(f"Cannot lay out {num_tokens} tokens on a grid for {height}x{width} images.")


class TokenReader:
    """Runs a backbone and returns the tokens a probe config asks for.

    Args:
        config: the backbone config.
        feature_layers: per-layer state indices to read (concatenated along channels). For most families 0 is
            the embedding output and ``i`` the output of block (or stage) ``i``; for ``timm_wrapper`` they are
            timm's block indices (``feature_info``). ``-1`` is the last.
        token_selection: ``"patch"`` or ``"all"`` ([CLS] + patches).
        apply_final_norm: ``None`` for the family's default.
        interpolate_offset: interpolate the position embeddings as torch.hub's DINOv2 does, with this offset (0.1
            there; `offset_position_interpolation`), instead of the family's own way; ``None`` for the latter.
        project_tokens: pass every token read through the backbone's output projection (``family.projection``):
            open_clip's ``_all`` tokens of a CLIP tower, ``[pooled; patches] @ proj``.
        frame_by_frame: an image backbone reads clips ``[B, T, 3, H, W]`` one frame at a time: every frame's
            patches, frame after frame on a ``(T, rows, columns)`` grid, led by the mean of the frames' [CLS] tokens
            (so a linear probe on it is the mean of its per-frame logits).
    """

    def __init__(
        self,
        config: PreTrainedConfig,
        feature_layers: list[int],
        token_selection: str = "patch",
        apply_final_norm: bool | None = None,
        interpolate_offset: float | None = None,
        project_tokens: bool = False,
        frame_by_frame: bool = False,
    ):
        self.config = vision_config(config)
        self.family = backbone_family(self.config)
        if frame_by_frame and (self.family.video is not None or self.family.states == "naflex"):
            kind = "a video backbone: it reads clips itself" if self.family.video else "NaFlex: its grid varies"
            raise ValueError(
                f"frame_by_frame is for image backbones on one patch grid; {self.config.model_type!r} is {kind}."
            )
        self.frame_by_frame = frame_by_frame
        self.feature_layers = list(feature_layers)
        self.token_selection = token_selection
        self.apply_final_norm = self.family.apply_final_norm if apply_final_norm is None else apply_final_norm
        self.interpolate_offset = interpolate_offset
        self.project_tokens = project_tokens
        if project_tokens:
            _backbone_class(self.config, project_tokens)  # a family without a projection fails here, clearly
        if self.apply_final_norm and self.family.final_norm is None:
            raise ValueError(f"apply_final_norm=True, but no final norm is known for {self.config.model_type!r}.")
        if interpolate_offset is not None and not self.family.offset_interpolation:
            supported = sorted(name for name, family in FAMILIES.items() if family.offset_interpolation)
            raise ValueError(
                f"interpolate_offset is torch.hub DINOv2's position interpolation ({supported} backbones); "
                f"{self.config.model_type!r} backbones interpolate their own way: leave it None."
            )
        if token_selection == "all" and not has_cls_token(self.config):
            raise ValueError(f"token_selection='all' reads a [CLS] token, but {self.config.model_type!r} has none.")
        # the layers read, non-negative (-1 and num_hidden_layers are one layer): what caches and layouts record
        self.layers = resolve_layers(self.config, self.feature_layers) if self.feature_layers else ()

    def reading(self, feature_layers=None, token_selection: str | None = None) -> TokenReader:
        """A reader of the same backbone, final-norm, interpolation and projection choices that reads other layers or
        tokens."""
        return TokenReader(
            self.config,
            self.feature_layers if feature_layers is None else list(feature_layers),
            token_selection or self.token_selection,
            self.apply_final_norm,
            self.interpolate_offset,
            self.project_tokens,
            self.frame_by_frame,
        )

    @property
    def reads_clips(self) -> bool:
        """Clips ``[B, T, 3, H, W]`` in: a video backbone, or an image backbone frame by frame."""
        return self.family.video is not None or self.frame_by_frame

    # ---------------------------------------------------------------------------------------------------------
    # What the backbone holds, found by running it on the meta device (shapes only, no weights, no compute)

    @property
    def states(self) -> tuple[State, ...]:
        """Width and grid of every per-layer state at the native image size."""
        return backbone_states(self.config)

    @property
    def num_hidden_layers(self) -> int:
        """The largest layer index (states go from 0 to it)."""
        return len(self.states) - 1

    @property
    def layer_width(self) -> int:
        """The common width of the layers read (tokens are ``layer_width`` times their number wide)."""
        return layer_states(self.config, self.feature_layers)[0].width

    @property
    def token_width(self) -> int:
        return token_width(self.config, self.feature_layers, self.project_tokens)

    def final_norm(self, backbone: nn.Module) -> nn.Module | None:
        if not self.apply_final_norm or self.family.states == "timm":
            return None
        norm = backbone
        for name in self.family.final_norm.split("."):
            norm = getattr(norm, name, None)
        if norm is None:
            raise ValueError(
                f"apply_final_norm=True, but this {self.config.model_type!r} backbone has no final norm "
                f"({self.family.final_norm} is None, e.g. VideoMAE built with use_mean_pooling=True); set "
                "apply_final_norm=False."
            )
        return norm

    def projection(self, backbone: nn.Module) -> nn.Module | None:
        """The output projection ``project_tokens`` applies, checked to be there (not dropped with the head)."""
        if not self.project_tokens:
            return None
        projection = backbone.get_submodule(self.family.projection)
        if not isinstance(projection, nn.Linear):
            raise ValueError(
                f"project_tokens reads the tokens through {self.family.projection}, but this backbone has none (a "
                f"{type(projection).__name__}): load it with its projection, AutoModelForImageClassification."
            )
        return projection

    # ---------------------------------------------------------------------------------------------------------

    def __call__(
        self,
        backbone: nn.Module,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
    ) -> Tokens:
        """Tokens of ``pixel_values``: ``[B, 3, H, W]`` images, ``[B, T, 3, H, W]`` clips for a video backbone (or an
        image backbone frame by frame), or, for NaFlex (SigLIP2), the image processor's patches
        ``[B, N, p * p * 3]`` with ``pixel_attention_mask`` and ``spatial_shapes``."""
        self.check_input(pixel_values)
        if self.family.states == "naflex":
            return self._read_naflex(backbone, pixel_values, pixel_attention_mask, spatial_shapes)
        if self.frame_by_frame:
            return self._read_frames(backbone, pixel_values, interpolate_pos_encoding)
        return self._read_images(backbone, pixel_values, interpolate_pos_encoding)

    def _read_frames(self, backbone: nn.Module, clips: torch.Tensor, interpolate_pos_encoding: bool | None) -> Tokens:
        """Clips ``[B, T, 3, H, W]`` through an image backbone as ``B * T`` images, their tokens laid out as a video
        family's: the patches frame after frame, led by the frames' mean [CLS] token where one is read."""
        batch, frames = clips.shape[:2]
        read = self._read_images(backbone, clips.flatten(0, 1), interpolate_pos_encoding)
        tokens = read.tokens.unflatten(0, (batch, frames))
        prefix = tokens[:, :, : read.num_prefix_tokens].mean(1)
        patches = tokens[:, :, read.num_prefix_tokens :].flatten(1, 2)
        return Tokens(torch.cat([prefix, patches], dim=1), read.num_prefix_tokens, (frames, *read.grid_size))

    def _read_images(self, backbone: nn.Module, pixel_values: torch.Tensor, interpolate_pos_encoding) -> Tokens:
        """Tokens of the backbone's own input: images, or a video backbone's clips."""
        image_size = tuple(pixel_values.shape[-2:])
        states, cls_tokens = self.read_states(backbone, pixel_values, self.feature_layers, interpolate_pos_encoding)
        read = [self._to_tokens(state, image_size, pixel_values) for state in states]
        described = [State(t.shape[-1], grid, prefix) for t, grid, prefix in read]
        if len({(state.width, state.grid_size, state.num_prefix_tokens) for state in described}) > 1:
            raise ValueError(
                f"feature_layers {self.feature_layers} of {self.config.model_type!r} have different widths or grids "
                "and cannot be concatenated along channels: "
                + "; ".join(f"{layer}: {state}" for layer, state in zip(self.feature_layers, described, strict=True))
            )
        _, grid, num_prefix = read[0]
        norm = self.final_norm(backbone)
        norm_width = getattr(norm, "normalized_shape", (described[0].width,))[-1]
        if norm_width != described[0].width:
            raise ValueError(
                f"The final norm of {self.config.model_type!r} ({self.family.final_norm}) normalises {norm_width} "
                f"channels, but layers {self.feature_layers} are {described[0].width} wide: read the last stage, or "
                "set apply_final_norm=False."
            )
        normed = [norm(t) if norm is not None else t for t, _, _ in read]
        tokens = normed[0] if len(normed) == 1 else torch.cat(normed, dim=-1)  # no copy of a single layer
        patches = tokens[:, num_prefix:]
        if self.token_selection == "all":
            if cls_tokens is not None or num_prefix != 1:  # else the tokens are [CLS] + patches already
                cls_token = tokens[:, :1] if cls_tokens is None else cls_tokens
                tokens = torch.cat([cls_token, patches], dim=1)
            num_prefix = 1
        else:
            tokens, num_prefix = patches, 0
        projection = self.projection(backbone)
        return Tokens(
            tokens if projection is None else projection(tokens), num_prefix_tokens=num_prefix, grid_size=grid
        )

    def check_input(self, pixel_values: torch.Tensor) -> None:
        """Images for an image backbone, clips for a video backbone: the other way round fails here, clearly."""
        name, shape = self.config.model_type, tuple(pixel_values.shape)
        video = self.family.video
        if video is None and pixel_values.ndim == 5 and not self.frame_by_frame:
            raise ValueError(
                f"{name!r} is an image backbone, but it was given video clips of shape {shape} ([B, T, 3, H, W]). "
                f"Probe videos with a video backbone ({', '.join(VIDEO_FAMILIES)}), read them frame by frame (a "
                "probe config's frames_per_clip, --frames_per_clip), or give it frames as images [B, 3, H, W]."
            )
        if self.frame_by_frame and pixel_values.ndim != 5:
            raise ValueError(
                f"This reader reads clips [B, T, 3, H, W] frame by frame through the image backbone {name!r}, but "
                f"it was given a tensor of shape {shape}. Give it clips, or read images with frames_per_clip unset."
            )
        if video is None:
            return
        if pixel_values.ndim != 5:
            raise ValueError(
                f"{name!r} is a video backbone: it reads clips [B, T, 3, H, W] (T frames, as its video processor "
                f"returns them), but it was given a tensor of shape {shape}"
                + (": images. Probe images with an image backbone." if pixel_values.ndim == 4 else ".")
            )
        video.check_clip(self.config, pixel_values)

    def read_states(
        self,
        backbone: nn.Module,
        pixel_values: torch.Tensor,
        layers: list[int] | None = None,
        interpolate_pos_encoding: bool | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """The backbone's raw states of ``layers`` (every state for ``None``) and, for timm with
        ``token_selection="all"``, its [CLS] tokens (timm returns them apart from the spatial states)."""
        if self.family.states == "timm":
            return self._timm_states(backbone, pixel_values, layers)
        kwargs = self.family.forward_kwargs(self.config, pixel_values)
        native = native_image_size(self.config)
        if self.family.fixed_image_size(self.config) and tuple(pixel_values.shape[-2:]) != native:
            raise ValueError(
                f"{self.config.model_type!r} backbones have position embeddings for {native[0]}x{native[1]} images only "
                f"(a learned table they do not interpolate), got {pixel_values.shape[-2]}x{pixel_values.shape[-1]}: "
                "resize the images (the backbone's image processor does)."
            )
        if self.family.interpolates_pos_encoding:
            if interpolate_pos_encoding is None:
                interpolate_pos_encoding = tuple(pixel_values.shape[-2:]) != native
            kwargs["interpolate_pos_encoding"] = interpolate_pos_encoding
        kwargs[self.family.input_name] = pixel_values
        with self._position_interpolation(backbone):
            outputs = backbone(output_hidden_states=True, **kwargs)
        states = tuple(outputs[self.family.states])
        if self.family.appends_last_hidden_state:
            states = (*states, outputs.last_hidden_state)
        return (list(states) if layers is None else [states[layer] for layer in layers]), None

    @contextlib.contextmanager
    def _position_interpolation(self, backbone: nn.Module) -> Iterator[None]:
        """With ``interpolate_offset``, the backbone's embeddings interpolate as torch.hub's DINOv2 for this call."""
        if self.interpolate_offset is None:
            yield
            return
        embeddings = backbone.embeddings
        embeddings.interpolate_pos_encoding = functools.partial(
            offset_position_interpolation, embeddings, self.interpolate_offset
        )
        try:
            yield
        finally:
            del embeddings.interpolate_pos_encoding  # the class's method again

    def _timm_states(self, backbone, pixel_values, layers) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """timm's own ``forward_intermediates`` (timm's final ``norm`` applied there when asked), by block index;
        with ``token_selection="all"``, the first prefix token (the [CLS]) of each layer read."""
        timm_model = backbone.timm_model
        count = len(timm_model.feature_info)
        layers = list(range(count)) if layers is None else layers
        indices = sorted({layer % count for layer in layers})
        reads_cls = self.token_selection == "all"
        if self.apply_final_norm and isinstance(getattr(timm_model, "norm", nn.Identity()), nn.Identity):
            raise ValueError(
                f"apply_final_norm=True, but the timm model {type(timm_model).__name__} has no final norm (`norm`) "
                "before its pooling; set apply_final_norm=False."
            )
        outputs = timm_model.forward_intermediates(
            pixel_values,
            indices=indices,
            norm=bool(self.apply_final_norm),
            intermediates_only=True,
            **({"return_prefix_tokens": True} if reads_cls else {}),
        )
        by_index = dict(zip(indices, outputs, strict=True))
        chosen = [by_index[layer % count] for layer in layers]
        if not reads_cls:
            return chosen, None
        cls_token = torch.cat([prefix[:, :1] for _, prefix in chosen], dim=-1)
        return [spatial for spatial, _ in chosen], cls_token

    def _to_tokens(
        self, state: torch.Tensor, image_size: tuple[int, int], pixel_values: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[int, ...], int]:
        """``[B, N, C]`` tokens, their grid and their number of leading tokens, from a map or a sequence."""
        if self.family.video is not None:
            return self._clip_tokens(state, image_size, pixel_values.shape[1])
        if state.ndim == 4:
            if not self.family.channels_last:
                state = state.permute(0, 2, 3, 1)
            return state.flatten(1, 2), tuple(state.shape[1:3]), 0
        if state.ndim != 3:
            raise ValueError(f"{self.config.model_type!r} returned a state of shape {tuple(state.shape)}.")
        num_tokens = state.shape[1]
        if self.family.patch_sequence or (
            self.config.model_type not in FAMILIES and getattr(self.config, "patch_size", None) is not None
        ):
            grid = patch_grid(self.config, pixel_values)
        else:
            grid = _sequence_grid(num_tokens, image_size)
        num_prefix = num_tokens - grid[0] * grid[1]
        if num_prefix < 0 or (self.family.patch_sequence and num_prefix != self.family.num_prefix_tokens(self.config)):
            raise ValueError(
                f"{self.config.model_type!r} returned {num_tokens} tokens for a {grid[0]}x{grid[1]} patch grid; "
                f"expected {self.family.num_prefix_tokens(self.config)} leading tokens before the patches."
            )
        return state, grid, num_prefix

    def _clip_tokens(
        self, state: torch.Tensor, image_size: tuple[int, int], num_frames: int
    ) -> tuple[torch.Tensor, tuple[int, int, int], int]:
        """A video family's state ``[B, prefix + T' * H' * W', C]`` with its space-time tokens frame after frame."""
        video = self.family.video
        frames, rows, columns = grid = video.token_grid(self.config, num_frames, image_size)
        num_prefix = self.family.num_prefix_tokens(self.config)
        if state.ndim != 3 or state.shape[1] != num_prefix + frames * rows * columns:
            raise ValueError(
                f"{self.config.model_type!r} returned a state of shape {tuple(state.shape)} for a {frames}x{rows}x"
                f"{columns} grid of space-time tokens; expected [B, {num_prefix} + {frames * rows * columns}, C]."
            )
        if video.frames_last:
            patches = state[:, num_prefix:].unflatten(1, (rows, columns, frames)).permute(0, 3, 1, 2, 4)
            state = torch.cat([state[:, :num_prefix], patches.flatten(1, 3)], dim=1)
        return state, grid, num_prefix

    def _read_naflex(self, backbone, pixel_values, pixel_attention_mask, spatial_shapes) -> Tokens:
        if pixel_values.ndim == 4:  # plain images: every one on the same grid, no padding
            pixel_values, pixel_attention_mask, spatial_shapes = naflex_patches(pixel_values, self.config.patch_size)
        if pixel_attention_mask is None or spatial_shapes is None:
            raise ValueError(
                f"{self.config.model_type!r} (NaFlex) reads patches [B, N, p*p*3] with pixel_attention_mask and "
                "spatial_shapes, as its image processor returns them; pass all three (or [B, 3, H, W] images)."
            )
        if self.token_selection == "all":
            raise ValueError(f"token_selection='all' reads a [CLS] token, but {self.config.model_type!r} has none.")
        outputs = backbone(
            pixel_values=pixel_values,
            pixel_attention_mask=pixel_attention_mask,
            spatial_shapes=spatial_shapes,
            output_hidden_states=True,
        )
        norm = self.final_norm(backbone)
        states = [outputs.hidden_states[layer] for layer in self.feature_layers]
        tokens = torch.cat([norm(state) if norm is not None else state for state in states], dim=-1)
        mask = pixel_attention_mask.bool()
        grids = {tuple(shape) for shape in spatial_shapes.tolist()}
        padded = not bool(mask.all())
        grid = next(iter(grids)) if len(grids) == 1 and not padded else None
        return Tokens(tokens, num_prefix_tokens=0, grid_size=grid, mask=mask if padded else None)


@dataclass(frozen=True)
class BackboneLayout:
    """What a backbone hands over: its per-layer states and whether it has a [CLS] token (for timm models, which
    one of the many architectures behind ``timm_wrapper`` decides)."""

    states: tuple[State, ...]
    has_cls_token: bool


_LAYOUTS: dict[str, BackboneLayout] = {}


def backbone_layout(config: PreTrainedConfig) -> BackboneLayout:
    """The layout of a backbone at its native image size, found by running it on the meta device (shapes only: no
    weights, no compute), once per config."""
    config = vision_config(config)
    key = config.to_json_string(use_diff=False)
    if key not in _LAYOUTS:
        _LAYOUTS[key] = _run_on_meta(copy.deepcopy(config))
    return _LAYOUTS[key]


def backbone_states(config: PreTrainedConfig) -> tuple[State, ...]:
    """Width and grid of every per-layer state of a backbone at its native image size."""
    return backbone_layout(config).states


def has_cls_token(config: PreTrainedConfig) -> bool:
    config = vision_config(config)
    family = backbone_family(config)
    return backbone_layout(config).has_cls_token if family.states == "timm" else family.has_cls_token


def _run_on_meta(config: PreTrainedConfig) -> BackboneLayout:
    family = backbone_family(config)
    if family.states == "naflex":  # data-dependent shapes, which meta tensors cannot run; grids vary anyway
        states = tuple(State(config.hidden_size, None) for _ in range(config.num_hidden_layers + 1))
        return BackboneLayout(states, family.has_cls_token)
    with torch.device("meta"):
        backbone = build_backbone(config).eval()
        size = native_image_size(config, backbone)
        frames = (family.video.native_frames(config),) if family.video is not None else ()
        pixel_values = torch.empty(1, *frames, getattr(config, "num_channels", 3), *size)
        reader = TokenReader(config, feature_layers=[], apply_final_norm=False)
        read = [reader._to_tokens(state, size, pixel_values) for state in reader.read_states(backbone, pixel_values)[0]]
    cls = _timm_has_class_token(backbone.timm_model) if family.states == "timm" else family.has_cls_token
    return BackboneLayout(tuple(State(tokens.shape[-1], grid, prefix) for tokens, grid, prefix in read), cls)


def _timm_has_class_token(timm_model: nn.Module) -> bool:
    """timm's ViTs say ``has_class_token``; its other token models (EVA, ...) hold a ``cls_token``, or ``None``."""
    if hasattr(timm_model, "has_class_token"):
        return bool(timm_model.has_class_token)
    return getattr(timm_model, "cls_token", None) is not None


def normalize_layers(layers, num_hidden_layers: int, first: str | None = None, described: str = "") -> tuple[int, ...]:
    """Layer (hidden-state) indices as non-negative numbers (``-1`` and ``num_hidden_layers`` are the same layer),
    with a clear error for one out of range. ``first`` names state 0, ``described`` is appended to the error."""
    count = num_hidden_layers + 1
    bad = [layer for layer in layers if not -count <= layer < count]
    if bad:
        zero = f"0 ({first})" if first else "0"
        raise ValueError(
            f"feature_layers {bad} out of range: layers go from {zero} to {num_hidden_layers} (or -{count} to -1). "
            + described
        )
    return tuple(layer % count for layer in layers)


def resolve_layers(config: PreTrainedConfig, feature_layers, concatenated: bool = True) -> tuple[int, ...]:
    """``feature_layers`` of a backbone checked and made non-negative: the one place layer indices are normalised
    (a reader's ``layers``, a grid's members, a cache's key all come from here). ``concatenated``: read together
    (one width and grid), else each on its own (a grid's members)."""
    for group in [feature_layers] if concatenated else [[layer] for layer in feature_layers]:
        layer_states(config, list(group))
    return normalize_layers(feature_layers, len(backbone_states(config)) - 1)


def layer_states(config: PreTrainedConfig, feature_layers: list[int]) -> list[State]:
    """The states ``feature_layers`` read; fails, listing every state, when one is out of range or they cannot be
    concatenated along channels (different widths or grids, e.g. two stages of a hierarchical model)."""
    states = backbone_states(config)
    listing = "; ".join(f"{index}: {state}" for index, state in enumerate(states))
    first = "timm's first block" if backbone_family(vision_config(config)).states == "timm" else "embeddings"
    described = f"The states of this {vision_config(config).model_type!r} backbone are {listing}."
    normalize_layers(feature_layers, len(states) - 1, first=first, described=described)
    chosen = [states[layer] for layer in feature_layers]
    if len({(state.width, state.grid_size) for state in chosen}) > 1:
        raise ValueError(
            f"feature_layers {list(feature_layers)} have different widths or grids and cannot be concatenated along "
            f"channels; read layers of one stage. The states of this {vision_config(config).model_type!r} backbone "
            f"are {listing}."
        )
    return chosen
