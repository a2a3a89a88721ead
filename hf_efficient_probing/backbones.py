"""Backbone adaptation: which tokens a frozen `transformers` vision model hands the probe, one row per family.

Every family differs in small ways that decide what a probe reads: how many leading tokens precede the patches
([CLS], distillation, registers), whether it has a [CLS] at all, which module is its final norm and whether the
paper's protocol reads tokens before or after it, and how to make it deterministic (ViT-MAE shuffles its patches).
``FAMILIES`` holds these facts; ``TokenReader`` applies them. A new family is one row; a family not in the table
still works (its leading tokens are counted from the patch grid, and no final norm is applied).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel


def _no_forward_kwargs(config: PreTrainedConfig, pixel_values: torch.Tensor) -> dict:
    return {}


def _identity_patch_order(config: PreTrainedConfig, pixel_values: torch.Tensor) -> dict:
    """ViT-MAE draws a random patch permutation on every call, even at mask_ratio=0: ask for the identity order."""
    height, width = patch_grid(config, pixel_values)
    noise = torch.arange(height * width, device=pixel_values.device, dtype=torch.float32)
    return {"noise": noise.expand(pixel_values.shape[0], -1)}


@dataclass(frozen=True)
class BackboneFamily:
    """Token layout of one backbone family.

    Attributes:
        model_type: ``config.model_type`` of the backbone (the vision config for CLIP/SigLIP).
        has_cls_token: whether the first token is a [CLS] token.
        extra_prefix_tokens: number of tokens between [CLS] and the patches (distillation, registers).
        final_norm: attribute of the backbone that holds its final norm, or ``None``.
        apply_final_norm: whether the paper's protocol reads the tokens after that norm.
        interpolates_pos_encoding: whether ``forward`` takes ``interpolate_pos_encoding`` (``False`` for families
            that always interpolate, or never can).
        config_overrides: settings forced on the backbone config so that it yields every patch deterministically.
        forward_kwargs: extra inputs of ``forward`` for the same purpose.
    """

    model_type: str
    has_cls_token: bool = True
    extra_prefix_tokens: Callable[[PreTrainedConfig], int] = lambda config: 0
    final_norm: str | None = "layernorm"
    apply_final_norm: bool = False
    interpolates_pos_encoding: bool = True
    config_overrides: dict = field(default_factory=dict)
    forward_kwargs: Callable[[PreTrainedConfig, torch.Tensor], dict] = _no_forward_kwargs

    def num_prefix_tokens(self, config: PreTrainedConfig) -> int:
        return int(self.has_cls_token) + self.extra_prefix_tokens(config)


FAMILIES: dict[str, BackboneFamily] = {
    family.model_type: family
    for family in [
        BackboneFamily("vit"),
        BackboneFamily("vit_mae", config_overrides={"mask_ratio": 0.0}, forward_kwargs=_identity_patch_order),
        BackboneFamily("deit", extra_prefix_tokens=lambda config: 1),
        BackboneFamily("beit"),
        BackboneFamily("ijepa", has_cls_token=False),
        BackboneFamily("dinov2", apply_final_norm=True, interpolates_pos_encoding=False),
        BackboneFamily(
            "dinov2_with_registers",
            extra_prefix_tokens=lambda config: config.num_register_tokens,
            apply_final_norm=True,
            interpolates_pos_encoding=False,
        ),
        BackboneFamily(
            "dinov3_vit",
            extra_prefix_tokens=lambda config: config.num_register_tokens,
            final_norm="norm",
            apply_final_norm=True,
            interpolates_pos_encoding=False,
        ),
        BackboneFamily("clip_vision_model", final_norm="post_layernorm", apply_final_norm=True),
        BackboneFamily("siglip_vision_model", has_cls_token=False, final_norm="post_layernorm", apply_final_norm=True),
    ]
}

# Multi-modal configs whose vision tower is what a probe reads.
_VISION_TOWERS = {"clip": "vision_config", "siglip": "vision_config", "siglip2": "vision_config"}


def vision_config(config: PreTrainedConfig) -> PreTrainedConfig:
    """The config of the vision tower: ``config.vision_config`` for CLIP/SigLIP, the config itself otherwise."""
    key = _VISION_TOWERS.get(config.model_type)
    return getattr(config, key) if key else config


def backbone_family(config: PreTrainedConfig) -> BackboneFamily:
    """The family row of a backbone config; unknown families get a generic row (patches found from the grid)."""
    return FAMILIES.get(config.model_type) or BackboneFamily(config.model_type, final_norm=None)


def patch_grid(config: PreTrainedConfig, pixel_values: torch.Tensor) -> tuple[int, int]:
    """``(rows, columns)`` of patches for images of this size."""
    patch = config.patch_size
    patch_h, patch_w = (patch, patch) if isinstance(patch, int) else patch
    return pixel_values.shape[-2] // patch_h, pixel_values.shape[-1] // patch_w


def prepare_backbone_config(config: PreTrainedConfig) -> PreTrainedConfig:
    """Apply the family's overrides (e.g. no MAE masking) and make ``hidden_states[-1]`` the pre-norm tokens."""
    config = vision_config(config)
    for key, value in backbone_family(config).config_overrides.items():
        setattr(config, key, value)
    config.tie_last_hidden_states = False
    return config


def build_backbone(config: PreTrainedConfig) -> PreTrainedModel:
    """A randomly initialised backbone from its config."""
    return AutoModel.from_config(prepare_backbone_config(config))


def load_backbone(name_or_path: str, revision: str | None = None, **hub_kwargs) -> PreTrainedModel:
    """Load pretrained backbone weights (for CLIP/SigLIP checkpoints, only the vision tower)."""
    config_kwargs = {key: value for key, value in hub_kwargs.items() if key != "dtype"}  # a config field otherwise
    config = prepare_backbone_config(AutoConfig.from_pretrained(name_or_path, revision=revision, **config_kwargs))
    return AutoModel.from_pretrained(name_or_path, config=config, revision=revision, **hub_kwargs)


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


@dataclass
class Tokens:
    """Tokens a probe reads: ``tokens`` ``[B, N, D]`` of which the first ``num_prefix_tokens`` are [CLS]."""

    tokens: torch.Tensor
    num_prefix_tokens: int
    grid_size: tuple[int, int]


class TokenReader:
    """Runs a backbone and returns the tokens a probe config asks for.

    Args:
        config: the backbone config.
        feature_layers: hidden-state indices to read (concatenated along channels).
        token_selection: ``"patch"`` or ``"all"`` ([CLS] + patches).
        apply_final_norm: ``None`` for the family's default.
    """

    def __init__(
        self,
        config: PreTrainedConfig,
        feature_layers: list[int],
        token_selection: str = "patch",
        apply_final_norm: bool | None = None,
    ):
        self.config = vision_config(config)
        self.family = backbone_family(self.config)
        self.feature_layers = list(feature_layers)
        self.token_selection = token_selection
        self.apply_final_norm = self.family.apply_final_norm if apply_final_norm is None else apply_final_norm
        if self.apply_final_norm and self.family.final_norm is None:
            raise ValueError(f"apply_final_norm=True, but no final norm is known for {self.config.model_type!r}.")
        if token_selection == "all" and not self.family.has_cls_token:
            raise ValueError(f"token_selection='all' reads a [CLS] token, but {self.config.model_type!r} has none.")

    def final_norm(self, backbone: nn.Module) -> nn.Module | None:
        return getattr(backbone, self.family.final_norm) if self.apply_final_norm else None

    def __call__(
        self, backbone: nn.Module, pixel_values: torch.Tensor, interpolate_pos_encoding: bool | None = None
    ) -> Tokens:
        grid = patch_grid(self.config, pixel_values)
        kwargs = self.family.forward_kwargs(self.config, pixel_values)
        if self.family.interpolates_pos_encoding:
            if interpolate_pos_encoding is None:
                interpolate_pos_encoding = tuple(pixel_values.shape[-2:]) != _image_size(self.config)
            kwargs["interpolate_pos_encoding"] = interpolate_pos_encoding
        outputs = backbone(pixel_values=pixel_values, output_hidden_states=True, **kwargs)
        norm = self.final_norm(backbone)
        layers = [outputs.hidden_states[layer] for layer in self.feature_layers]
        tokens = torch.cat([norm(h) if norm is not None else h for h in layers], dim=-1)

        num_patches = grid[0] * grid[1]
        num_prefix = tokens.shape[1] - num_patches
        if num_prefix < 0 or (
            self.config.model_type in FAMILIES and num_prefix != self.family.num_prefix_tokens(self.config)
        ):
            raise ValueError(
                f"{self.config.model_type!r} returned {tokens.shape[1]} tokens for a {grid[0]}x{grid[1]} patch "
                f"grid; expected {self.family.num_prefix_tokens(self.config)} leading tokens before the patches."
            )
        patches = tokens[:, num_prefix:]
        if self.token_selection == "all":
            return Tokens(torch.cat([tokens[:, :1], patches], dim=1), num_prefix_tokens=1, grid_size=grid)
        return Tokens(patches, num_prefix_tokens=0, grid_size=grid)


def _image_size(config: PreTrainedConfig) -> tuple[int, int]:
    size = config.image_size
    return (size, size) if isinstance(size, int) else tuple(size)
