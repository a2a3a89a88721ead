"""Configurations of the probes: one `PreTrainedConfig` per probe kind, the backbone config as a sub-config.

A probe config says everything needed to rebuild the probe and re-attach it to its frozen backbone: the backbone's
architecture (``backbone_config``) and where its weights live (``backbone_name_or_path``, ``backbone_revision``),
which tokens and which layer(s) the probe reads, and the probe's own hyper-parameters.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, ClassVar

import torch
from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .backbones import backbone_family, backbone_states, has_cls_token, layer_states, token_width, vision_config
from .checkpoint import CheckpointKind
from .probes import LINEAR_FEATURES, attentive_kinds, probe_kind, valid_num_queries

TOKEN_SELECTIONS = ("patch", "all")

# Keyword arguments `PreTrainedConfig` itself consumes; anything else a config file carries that no field of ours
# declares comes from another (newer) version of this library and is reported, not silently kept.
_BASE_CONFIG_KWARGS = {
    "num_labels",
    "torch_dtype",
    "name_or_path",
    "_name_or_path",
    "_commit_hash",
    "output_attentions",
    "attn_implementation",
    "experts_implementation",
    "per_layer_config",
    "_attn_implementation_internal",
    "_experts_implementation_internal",
    "transformers_version",
    "architectures",
    "model_type",
    "use_cache",  # set by the Trainer on the model config during training
}


@strict
class ProbingConfig(PreTrainedConfig):
    r"""Fields shared by every probe of this library. Not used directly: use a subclass.

    Args:
        backbone_config (`dict` or `PreTrainedConfig`, *optional*):
            Architecture of the frozen backbone (a ViT config by default). For CLIP/SigLIP give the vision config.
        backbone_name_or_path (`str`, *optional*):
            Hub id or local path of the backbone's pretrained weights. A probe-only checkpoint re-attaches this
            backbone when it is loaded; without it the backbone must be saved with the probe.
        backbone_revision (`str`, *optional*):
            Revision (branch, tag or commit) of `backbone_name_or_path`.
        backbone_overrides (`dict`, *optional*):
            Fields set on the backbone's config whenever it is loaded from `backbone_name_or_path` (a dict value
            updates a dict field), e.g. `{"model_args": {"act_layer": "quick_gelu"}}` for a timm CLIP tower whose
            Hub config names another activation than the one the probe was trained on.
        backbone_adapter (`str`, *optional*):
            Sub-folder of the probe's checkpoint holding a `peft` adapter (e.g. LoRA) trained on the backbone with the
            probe; written into the saved config. Loading applies it to the named backbone, so the checkpoint stays
            probe-sized.
        checkpoint_kind (`str`, *optional*):
            What the checkpoint this config was read from holds: `"probe"`, `"probe_with_adapter"` or `"full"`
            (`hf_efficient_probing.checkpoint`); written into the saved config, never set on the model's own config.
            `None` for a config not read from a checkpoint, or from one saved before the kind was recorded.
        feature_layers (`list[int]`, *optional*, defaults to `[-1]`):
            Which per-layer states the probe reads, indexed like `hidden_states`: 0 is the embedding output, `i` the
            output of block (or, for hierarchical models and CNNs, stage) `i`, -1 the last; for `timm_wrapper`
            backbones, timm's block indices. Several layers are concatenated along the channel axis; they must have
            the same width and grid.
        token_selection (`str`, *optional*, defaults to `"patch"`):
            `"patch"`: patch tokens only (the paper's default). `"all"`: the [CLS] token followed by the patch
            tokens (register and distillation tokens are always dropped).
        apply_final_norm (`bool`, *optional*):
            Whether the backbone's final normalisation is applied to the tokens read. `None` uses the family's
            default (the official code reads post-norm tokens for DINOv2/CLIP/SigLIP, pre-norm for MAE-style ViTs).
        interpolate_offset (`float`, *optional*):
            Interpolate the position embeddings as torch.hub's DINOv2 does (`scale_factor=(grid + offset) / M`; 0.1
            there) instead of transformers' way (`size=grid`), for probes trained on the torch.hub model at another
            image size than the backbone's. DINOv2 backbones only; `None` (the default) keeps transformers' way.
        project_tokens (`bool`, *optional*, defaults to `False`):
            Pass every token read through the backbone's output projection (a timm CLIP tower's `head`, its visual
            projection; the backbone is then loaded with `AutoModelForImageClassification`, which keeps it): the
            tokens of the official code's `_all` heads on open_clip CLIP towers, `[pooled; patches] @ proj`.
        freeze_backbone (`bool`, *optional*, defaults to `True`):
            Keep the backbone frozen (no gradients, eval mode). Set to `False` only to fine-tune it (e.g. with LoRA).
        batch_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of the non-affine BatchNorm before the classifier.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the backbone's initialiser when it is built from its config.
        token_width (`int`, *optional*):
            Width of the tokens the probe reads (the layers' real width times their number), set from the
            backbone when the config is created. A probe-only checkpoint records it, so that loading it onto a
            backbone giving other tokens fails clearly.
        frames_per_clip (`int`, *optional*):
            The frames of each clip the probe reads; `None` for images. A video backbone's is set from its config
            when the config is created (VideoMAE, ViViT and TimeSformer read exactly their `num_frames`; V-JEPA 2
            any multiple of its tubelet); with the tubelet and patch sizes of `backbone_config`, it fixes the
            `(frames / tubelet, rows, columns)` grid of the space-time tokens: a probe-only checkpoint refuses a
            backbone cutting clips otherwise, and the probe refuses clips of another length. Set on an image
            backbone, the probe reads clips of that many frames frame by frame (`reads_frames`): every frame's
            patches on a `(frames, rows, columns)` grid, led by the mean of the frames' [CLS] tokens.
        batch_norm (`bool`, *optional*, defaults to `True`):
            Whether a non-affine BatchNorm standardises the pooled feature before the classifier (the paper's
            head). `False`: pooling -> classifier, as V-JEPA 2's probes are trained (its converted heads).
        multi_label_threshold (`float`, *optional*):
            Multi-label probes (``problem_type="multi_label_classification"``: one sigmoid per class) only: the
            probability from which a class is predicted, chosen on data held out from train when the probe was
            trained. ``pipeline("image-classification")`` returns every class at or above it.
    """

    sub_configs_defaults = {"backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="vit")}
    pooling_name: ClassVar[str] = ""

    backbone_config: dict | PreTrainedConfig | None = None
    backbone_name_or_path: str | None = None
    backbone_revision: str | None = None
    backbone_overrides: dict | None = None
    backbone_adapter: str | None = None
    checkpoint_kind: str | None = None
    feature_layers: list[int] | tuple[int, ...] = (-1,)
    token_selection: str = "patch"
    apply_final_norm: bool | None = None
    interpolate_offset: float | None = None
    project_tokens: bool = False
    freeze_backbone: bool = True
    batch_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    token_width: int | None = None
    frames_per_clip: int | None = None
    batch_norm: bool = True
    multi_label_threshold: float | None = None

    def __post_init__(self, **kwargs):
        unknown = sorted(set(kwargs) - _BASE_CONFIG_KWARGS)
        if unknown:
            warnings.warn(
                f"{type(self).__name__} got fields it does not know: {unknown}. The config was probably written by "
                "a newer version of hf-efficient-probing; upgrade it, or the probe may not behave as saved.",
                UserWarning,
                stacklevel=3,
            )
        # `PreTrainedConfig.__post_init__` dereferences these before the strict type checks run: check them first
        # so that a malformed config file fails with a message, not an AttributeError deep inside transformers.
        for name, allowed in (("backbone_config", (dict, PreTrainedConfig)), ("id2label", (dict,))):
            value = getattr(self, name)
            if value is not None and not isinstance(value, allowed):
                raise TypeError(f"{name} must be a dict or None in a probe config, got {type(value).__name__}.")
        if isinstance(self.backbone_config, dict) and not isinstance(self.backbone_config.get("model_type"), str):
            raise ValueError("backbone_config needs a 'model_type' naming the backbone family (e.g. 'vit').")
        super().__post_init__(**kwargs)
        if isinstance(self.backbone_config, PreTrainedConfig):
            self.backbone_config = vision_config(self.backbone_config)
        self.feature_layers = list(self.feature_layers)
        if self.token_width is None and self._layers_are_ints():
            states = backbone_states(self.backbone_config)
            if all(-len(states) <= layer < len(states) for layer in self.feature_layers):
                self.token_width = token_width(self.backbone_config, self.feature_layers, self.project_tokens)
        video = backbone_family(self.backbone_config).video
        if self.frames_per_clip is None and video is not None:
            self.frames_per_clip = video.native_frames(self.backbone_config)

    def _layers_are_ints(self) -> bool:
        return bool(self.feature_layers) and all(isinstance(layer, int) for layer in self.feature_layers)

    def validate_probe_settings(self):
        eps = self.batch_norm_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"batch_norm_eps must be a positive number (default 1e-6), got {eps!r}.")
        kinds = [kind.value for kind in CheckpointKind]
        if self.checkpoint_kind is not None and self.checkpoint_kind not in kinds:
            raise ValueError(f"checkpoint_kind must be one of {kinds} (or None), got {self.checkpoint_kind!r}.")
        if self.token_selection not in TOKEN_SELECTIONS:
            raise ValueError(f"token_selection must be one of {TOKEN_SELECTIONS}, got {self.token_selection!r}.")
        if not self._layers_are_ints():
            raise ValueError(f"feature_layers must be a non-empty list of ints, got {self.feature_layers!r}.")
        layer_states(self.backbone_config, self.feature_layers)
        family = backbone_family(self.backbone_config)
        self._check_frames_per_clip(family)
        offset = self.interpolate_offset
        if offset is not None and (isinstance(offset, bool) or not isinstance(offset, (int, float)) or not offset > 0):
            raise ValueError(f"interpolate_offset must be a positive number (torch.hub DINOv2: 0.1), got {offset!r}.")
        self._check_multi_label_threshold()
        if self.reads_cls_token and not has_cls_token(self.backbone_config):
            raise ValueError(
                f"This probe reads the [CLS] token, but {family.model_type!r} backbones have none. Use "
                "token_selection='patch' (and 'gap' features for a linear probe)."
            )

    def _check_multi_label_threshold(self) -> None:
        threshold = self.multi_label_threshold
        if threshold is None:
            return
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
            raise ValueError(f"multi_label_threshold must be a probability in (0, 1), got {threshold!r}.")
        if self.problem_type != "multi_label_classification":
            raise ValueError(
                f"multi_label_threshold is for multi-label probes (problem_type='multi_label_classification'), but "
                f"problem_type is {self.problem_type!r}: set both, or neither."
            )

    def _check_frames_per_clip(self, family) -> None:
        frames, video = self.frames_per_clip, family.video
        if video is None:  # an image backbone: images, or clips frame by frame
            if frames is not None and (isinstance(frames, bool) or not isinstance(frames, int) or frames < 1):
                raise ValueError(
                    f"frames_per_clip is the number of frames of the clips an image backbone reads frame by frame "
                    f"(None: it reads images), got {frames!r}."
                )
            if frames is not None and layer_states(self.backbone_config, self.feature_layers)[0].grid_size is None:
                raise ValueError(
                    f"{family.model_type!r} backbones give tokens on a grid that depends on the image (NaFlex), so "
                    "clips cannot be read frame by frame on one space-time grid; leave frames_per_clip unset."
                )
            return
        tubelet, native = video.tubelet(self.backbone_config)[0], video.native_frames(self.backbone_config)
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < tubelet or frames % tubelet:
            raise ValueError(
                f"frames_per_clip must be a positive multiple of the tubelet ({tubelet} frames) of this "
                f"{family.model_type!r} backbone, got {frames!r}."
            )
        if video.fixed_frames and frames != native:
            raise ValueError(
                f"{family.model_type!r} backbones read clips of exactly their {video.frames_field} ({native} "
                f"frames here), so frames_per_clip={frames} cannot be read; leave it unset or use {native}."
            )

    @property
    def clip_token_grid(self) -> tuple[int, int, int] | None:
        """``(frames, rows, columns)`` of the space-time tokens of the clips the probe reads (``None``: images); an
        image backbone read frame by frame gives each frame's patch grid at its native size."""
        if self.frames_per_clip is None:
            return None
        video = backbone_family(self.backbone_config).video
        if video is not None:
            return video.token_grid(self.backbone_config, self.frames_per_clip)
        return (self.frames_per_clip, *layer_states(self.backbone_config, self.feature_layers)[0].grid_size)

    @property
    def reads_frames(self) -> bool:
        """An image backbone reading clips frame by frame."""
        return self.frames_per_clip is not None and backbone_family(self.backbone_config).video is None

    @property
    def reads_cls_token(self) -> bool:
        return self.token_selection == "all"

    def pooling_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the pooling registered as `pooling_name`."""
        raise NotImplementedError


@strict
class EfficientProbingConfig(ProbingConfig):
    r"""Configuration of an Efficient Probing (EP) head.

    Args:
        num_queries (`int`, *optional*, defaults to 32):
            Number of learned queries M. `token_width` must be divisible by `d_out * num_queries`.
        d_out (`int`, *optional*, defaults to 1):
            Output reduction D_o: the pooled feature has width `token_width / d_out`.
        value_bias (`bool`, *optional*, defaults to `False`):
            Whether the value projection has a bias (the paper's has none).

    Example:

    ```python
    >>> from transformers import ViTConfig
    >>> from hf_efficient_probing import EfficientProbingConfig, ViTForEfficientProbing
    >>> config = EfficientProbingConfig(backbone_config=ViTConfig(), num_queries=32, num_labels=1000)
    >>> model = ViTForEfficientProbing(config)  # random backbone; use `from_backbone` for pretrained weights
    ```
    """

    model_type = "efficient_probing"
    pooling_name = "ep"

    num_queries: int = 32
    d_out: int = 1
    value_bias: bool = False

    def validate_ep_shape(self):
        for name in ("num_queries", "d_out"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):  # bool is an int to Python, not a count
                raise TypeError(f"{name} must be an integer, got {value!r}.")
        width = self.token_width
        if width is None:  # the feature layers are invalid: validate_probe_settings says why
            return
        if self.num_queries < 1 or self.d_out < 1 or width % (self.d_out * self.num_queries):
            raise ValueError(
                f"EP needs the token width ({width}) divisible by d_out * num_queries; got d_out={self.d_out}, "
                f"num_queries={self.num_queries}. With d_out={self.d_out} the valid num_queries are "
                f"{valid_num_queries(width, self.d_out) or 'none (d_out must divide the width)'}."
            )

    def pooling_kwargs(self):
        return {"num_queries": self.num_queries, "d_out": self.d_out, "value_bias": self.value_bias}


@strict
class LinearProbingConfig(ProbingConfig):
    r"""Configuration of a linear probe (BatchNorm + linear classifier on a fixed feature).

    Args:
        features (`str`, *optional*, defaults to `"cls"`):
            `"cls"`: the [CLS] token; `"gap"`: the mean of the patch tokens; `"cls+gap"`: both, concatenated.
            The tokens read follow from it (`token_selection` is set to `"all"` when the [CLS] token is needed).
    """

    model_type = "linear_probing"
    pooling_name = "linear"

    features: str = "cls"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.features in LINEAR_FEATURES:
            self.token_selection = "patch" if self.features == "gap" else "all"

    def validate_features(self):
        if self.features not in LINEAR_FEATURES:
            raise ValueError(f"features must be one of {LINEAR_FEATURES}, got {self.features!r}.")

    def pooling_kwargs(self):
        return {"features": self.features}


@strict
class AttentiveProbingConfig(ProbingConfig):
    r"""Configuration of an attentive-probing baseline of the paper (every registered pooling but EP and linear).

    Args:
        pooler_type (`str`, *optional*, defaults to `"aim"`):
            The pooling, by its official name: `abmilp`, `simpool`, `esimpool`, `clip`, `siglip`, `aim`, `coca`,
            `cait`, `dinovit`, `jepa`, `dolg`, `cae`, `cbam` or `mhca`, or one registered with
            `hf_efficient_probing.probes.register_pooling`.
        pooler_kwargs (`dict`, *optional*):
            Hyper-parameters of that pooling, by the names of its constructor (e.g. `{"num_heads": 16}` for `aim`,
            `{"self_attention": "none", "depth": 1}` for `abmilp`); omitted ones take the official defaults. See the
            pooling classes in `hf_efficient_probing.probes`. Unknown names are rejected.

    Example:

    ```python
    >>> from transformers import ViTConfig
    >>> from hf_efficient_probing import AttentiveProbingConfig, ViTForAttentiveProbing
    >>> config = AttentiveProbingConfig(backbone_config=ViTConfig(), pooler_type="jepa", num_labels=1000)
    >>> model = ViTForAttentiveProbing(config)
    ```
    """

    model_type = "attentive_probing"

    pooler_type: str = "aim"
    pooler_kwargs: dict | None = None

    @property
    def pooling_name(self) -> str:
        return self.pooler_type

    def validate_pooler(self):
        if self.pooler_type not in attentive_kinds():
            raise ValueError(
                f"pooler_type must be one of {list(attentive_kinds())}, got {self.pooler_type!r} (EP and linear "
                "probes have their own configs: EfficientProbingConfig, LinearProbingConfig)."
            )
        pooling = probe_kind(self.pooler_type).pooling
        parameters = inspect.signature(pooling).parameters
        accepted = [name for name in parameters if name != "hidden_size"]
        unknown = sorted(set(self.pooler_kwargs or {}) - set(accepted))
        if unknown:
            raise ValueError(
                f"pooler_kwargs {unknown} are not hyper-parameters of {self.pooler_type!r}; it accepts {accepted}."
            )
        if self.token_width is None:  # the feature layers are invalid: validate_probe_settings says why
            return
        with torch.device("meta"):  # surfaces shape errors (e.g. width not divisible by num_heads) now, for free
            pooling(self.token_width, **self.pooling_kwargs())

    def pooling_kwargs(self):
        return dict(self.pooler_kwargs or {})


# Each probe kind names its config by ``model_type`` (`probes.registry`); this is where those names lead.
PROBE_CONFIG_CLASSES: dict[str, type[ProbingConfig]] = {
    config.model_type: config for config in (EfficientProbingConfig, LinearProbingConfig, AttentiveProbingConfig)
}


def probe_config_class(probe: str) -> type[ProbingConfig]:
    """The config class of probe kind ``probe`` (an unknown kind is an error listing the known ones)."""
    return PROBE_CONFIG_CLASSES[probe_kind(probe).config_type]


__all__ = [
    "PROBE_CONFIG_CLASSES",
    "AttentiveProbingConfig",
    "EfficientProbingConfig",
    "LinearProbingConfig",
    "ProbingConfig",
    "probe_config_class",
]
