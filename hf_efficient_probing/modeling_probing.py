"""Probes as `transformers` image-classification heads over a frozen backbone.

``backbone -> TokenReader -> ProbeHead (pooling -> BatchNorm -> classifier)``. The generic classes work with any
backbone `AutoModel` can build; the named classes (``ViTMAEForEfficientProbing``, ...) are the same model pinned to
one backbone family, so that a wrong backbone fails early and the class name says what it probes.

Checkpoints are probe-only by default, in the spirit of a `peft` adapter: ``model.safetensors`` holds the probe
(a few MB) and ``config.json`` names the backbone by id and revision; ``from_pretrained`` loads that backbone and
then the probe. What each kind of checkpoint holds, and how it is written, is `hf_efficient_probing.checkpoint`.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

from .backbones import (
    TokenReader,
    Tokens,
    build_backbone,
    layer_states,
    load_backbone,
    load_backbone_adapter,
    prepare_loaded_backbone,
    token_width,
    vision_config,
)
from .checkpoint import (
    BACKBONE_ADAPTER_DIR,
    PROBE_PREFIX,
    CheckpointKind,
    check_checkpoint_tensors,
    checkpoint_tensors,
    finish_interrupted_save,
    kind_to_save,
    recorded_kind,
    resolve_weights,
    write_checkpoint,
)
from .configuration_probing import (
    AttentiveProbingConfig,
    EfficientProbingConfig,
    LinearProbingConfig,
    ProbingConfig,
    probe_config_class,
)
from .hub import push_probe_to_hub
from .probes import ATTENTIVE_CONFIG_TYPE, ProbeHead, build_pooling
from .probes.patch_grid import square_grid

_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
_BACKBONE_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "dtype")

# Filled as the head classes are defined: probe kind (config ``model_type``) -> generic head, and
# (probe kind, backbone family) -> the named head that pins that family (`modeling_families`).
GENERIC_PROBE_CLASSES: dict[str, type[ProbingPreTrainedModel]] = {}
NAMED_PROBE_CLASSES: dict[tuple[str, str], type[ProbingPreTrainedModel]] = {}


@dataclass
class ProbingOutput(ImageClassifierOutput):
    """`ImageClassifierOutput` plus ``probe_attentions`` ``[B, Q, N]``: each probe query's (or head's) attention
    over the ``N`` tokens it read, returned with ``output_attentions=True`` by poolings that attend."""

    probe_attentions: torch.FloatTensor | None = None


# Config fields that fix a backbone's architecture in some family or other (compared when both configs have them):
# for video families also how clips become tokens (tubelet, frames per clip where it is fixed, V-JEPA 2's crop).
_ARCHITECTURE_FIELDS = (
    "hidden_size",
    "hidden_sizes",
    "embed_dim",
    "patch_size",
    "image_size",
    "architecture",
    "tubelet_size",
    "num_frames",
    "crop_size",
)


def flatten_clips(inputs: torch.Tensor, item_ndim: int) -> tuple[torch.Tensor, int | None]:
    """Inputs holding ``K`` clips of each video (one dimension more than ``item_ndim``: ``[B, K, ...]``) as ``B * K``
    items, and ``K``; other inputs unchanged, and ``None``."""
    if inputs.ndim != item_ndim + 1:
        return inputs, None
    return inputs.flatten(0, 1), inputs.shape[1]


def mean_over_clips(logits: torch.Tensor, clips: int | None) -> torch.Tensor:
    """``[B * K, C]`` logits of ``K`` clips per video as ``[B, C]``: their mean over each video's clips (a video is
    classified by its clips together, as V-JEPA 2's eval reads several clips per video)."""
    return logits if clips is None else logits.unflatten(0, (-1, clips)).mean(dim=1)


def _as_json(value):
    """A config value as JSON would give it back (tuples as lists), so that a saved config compares equal."""
    return [_as_json(item) for item in value] if isinstance(value, (list, tuple)) else value


def check_backbone_matches(
    expected: dict | object, backbone_config, feature_layers=None, width=None, project_tokens: bool = False
) -> None:
    """Fail clearly when a probe meets a backbone of another family, width or patch grid than it was trained on
    (``width``: the width of the tokens the probe reads from ``feature_layers``, checked against the tokens the
    backbone really gives)."""
    expected = vision_config(expected)
    actual = vision_config(backbone_config)

    def described(config) -> str:
        fields = {name: getattr(config, name) for name in _ARCHITECTURE_FIELDS if hasattr(config, name)}
        return f"{config.model_type!r}, " + ", ".join(f"{name}={value!r}" for name, value in fields.items())

    for attribute in ("model_type", *_ARCHITECTURE_FIELDS):
        want, got = _as_json(getattr(expected, attribute, None)), _as_json(getattr(actual, attribute, None))
        if want != got:
            raise ValueError(
                f"This probe was built for a {expected.model_type!r} backbone with {attribute}={want!r}, but the "
                f"backbone given has {attribute}={got!r} ({described(actual)}). Load the probe onto the backbone it "
                "was trained on."
            )
    if width is not None:
        got = token_width(actual, feature_layers, project_tokens)
        if got != width:
            raise ValueError(
                f"This probe reads tokens of width {width} (layers {list(feature_layers)}), but the backbone "
                f"given ({described(actual)}) gives tokens of width {got} there. Load the probe onto the backbone it "
                "was trained on."
            )


class ProbingPreTrainedModel(PreTrainedModel):
    """A frozen backbone read by a probe head. Subclasses set ``config_class`` (the probe kind) and may pin
    ``backbone_model_type`` (the backbone family)."""

    config_class: ClassVar[type[ProbingConfig]] = ProbingConfig
    base_model_prefix = "backbone"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _keys_to_ignore_on_load_missing = [r"^backbone\."]
    backbone_model_type: ClassVar[str | None] = None

    def __init_subclass__(cls, family: str | None = None, **kwargs):
        """``class XForEfficientProbing(VisionModelForEfficientProbing, family="x")`` pins the head to backbone family
        ``x`` (a backbone config ``model_type``) and registers it as the head of that family and probe kind."""
        super().__init_subclass__(**kwargs)
        if family is None:
            return
        key = (cls.config_class.model_type, family)
        if key in NAMED_PROBE_CLASSES:
            raise ValueError(
                f"{NAMED_PROBE_CLASSES[key].__name__} is already the {key[0]!r} head of {family!r} backbones; "
                f"{cls.__name__} cannot register for them too."
            )
        cls.backbone_model_type = family
        NAMED_PROBE_CLASSES[key] = cls

    def __init__(self, config: ProbingConfig, backbone: PreTrainedModel | None = None):
        super().__init__(config)
        # `transformers` routes the loss by class name; ours does not match its table, so name the task.
        self.loss_type = "ForImageClassification"
        family = vision_config(config.backbone_config).model_type
        if self.backbone_model_type is not None and family != self.backbone_model_type:
            raise ValueError(
                f"{type(self).__name__} probes {self.backbone_model_type!r} backbones, but the config describes a "
                f"{family!r} backbone. Use the class for that family, or AutoModelForEfficientProbing."
            )
        if backbone is not None:
            prepare_loaded_backbone(backbone)
            check_backbone_matches(
                config.backbone_config,
                backbone.config,
                config.feature_layers,
                config.token_width,
                config.project_tokens,
            )
        self.token_reader = TokenReader(
            config.backbone_config,
            config.feature_layers,
            config.token_selection,
            config.apply_final_norm,
            config.interpolate_offset,
            config.project_tokens,
            config.reads_frames,
        )
        pooling = build_pooling(config.pooling_name, config.token_width, **config.pooling_kwargs())
        self.probe = ProbeHead(pooling, config.num_labels, config.batch_norm_eps, config.batch_norm)
        self.post_init()
        # Attached after `post_init` so that initialisation never touches pretrained backbone weights.
        self.backbone = (
            backbone if backbone is not None else build_backbone(config.backbone_config, config.project_tokens)
        )
        self.token_reader.projection(self.backbone)  # a backbone loaded without its projection fails here
        if config.freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def _init_weights(self, module):
        """The probe initialises itself in its constructor (the official schemes); the backbone has its own init."""

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.freeze_backbone:
            self.backbone.eval()  # no dropout, drop-path or BatchNorm updates in a frozen backbone
        return self

    def default_grid_size(self, num_patches: int) -> tuple[int, ...] | None:
        """Grid of cached tokens: the space-time grid of the clips the probe reads (video), else the grid the layers
        read have at the backbone's native image size, or a square one when the count differs (``None`` when no
        grid fits, e.g. padded NaFlex tokens: the poolings that need a grid then ask for ``grid_size``)."""
        native = self.config.clip_token_grid
        if native is None:
            native = layer_states(self.token_reader.config, self.config.feature_layers)[0].grid_size
        if native is not None and math.prod(native) == num_patches:
            return native
        return square_grid(num_patches)

    def token_layout(self, tokens: torch.Tensor, grid_size: tuple[int, int] | None = None) -> tuple[int, tuple | None]:
        """For tokens given directly (``forward(tokens=...)``): how many lead the patches ([CLS]), and their grid."""
        num_prefix = int(self.config.reads_cls_token)
        return num_prefix, grid_size or self.default_grid_size(tokens.shape[1] - num_prefix)

    def read_tokens(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
    ) -> Tokens:
        """Run the backbone on ``pixel_values`` and return the tokens the probe reads (with their grid and mask), as
        ``forward`` does; ``forward(tokens=...)`` then runs the probe alone on them, e.g. many times per image."""
        frames = self.config.frames_per_clip
        if frames is not None and pixel_values.ndim == 5 and pixel_values.shape[1] != frames:
            raise ValueError(
                f"This probe reads clips of {frames} frames (config.frames_per_clip), but was given clips of "
                f"{pixel_values.shape[1]} frames ({tuple(pixel_values.shape)}): sample clips of {frames} frames."
            )
        backbone_grad = torch.is_grad_enabled() and not self.config.freeze_backbone
        with torch.set_grad_enabled(backbone_grad):
            return self.token_reader(
                self.backbone, pixel_values, interpolate_pos_encoding, pixel_attention_mask, spatial_shapes
            )

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        tokens: torch.Tensor | None = None,
        grid_size: tuple[int, int] | None = None,
        token_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        uniform_queries: Sequence[int] | None = None,
        **kwargs,
    ) -> ProbingOutput:
        r"""
        Args:
            pixel_values: ``[B, 3, H, W]`` images prepared by the backbone's image processor, or for a video backbone
                (or an image backbone read frame by frame, ``config.reads_frames``) ``[B, T, 3, H, W]`` clips of
                ``config.frames_per_clip`` frames prepared by its video processor, or
                ``[B, K, T, 3, H, W]``: K clips of each video, classified by the mean of their K logits (their
                ``probe_attentions`` stay per clip, ``[B * K, ...]``).
            labels: ``[B]`` class indices; a loss is returned when given.
            tokens: instead of images, the tokens the probe reads (e.g. from a token cache): ``[B, N, D]`` with the
                [CLS] token first when the config reads it, or ``[B, K, N, D]`` for K clips of each video (their
                logits averaged). The backbone is not run.
            grid_size: grid of ``tokens``: ``(rows, columns)``, or ``(frames, rows, columns)`` for a clip's
                space-time tokens (defaults to the backbone's native grid, or the grid of the clips the probe reads).
            token_mask: ``[B, N]`` for ``tokens``, ``True`` for real tokens and ``False`` for padding, which every
                pooling ignores (NaFlex tokens of images of different sizes, padded to one length).
            output_attentions: return ``probe_attentions``.
            pixel_attention_mask, spatial_shapes: NaFlex (SigLIP2) inputs, as its image processor returns them
                with patchified ``pixel_values``; the padding patches they mark are ignored by the probe.
            uniform_queries: for analysis, indices of EP queries whose attention is replaced by the uniform
                distribution over the tokens (what each query contributes: `hf_efficient_probing.analysis`).
        """
        clips = None  # K clips of each video, given as [B, K, ...]: classified by the mean of their logits
        if tokens is not None:
            tokens, clips = flatten_clips(tokens, 3)
            token_mask = token_mask.flatten(0, 1) if clips is not None and token_mask is not None else token_mask
        elif pixel_values is not None and self.config.frames_per_clip is not None:
            pixel_values, clips = flatten_clips(pixel_values, 5)
        if tokens is None:
            if pixel_values is None:
                video = " (a video processor's pixel_values_videos are passed as pixel_values)"
                raise ValueError(
                    "Pass either pixel_values (images, or video clips) or tokens (e.g. from a token cache)"
                    + (video if "pixel_values_videos" in kwargs else "")
                    + "."
                )
            read = self.read_tokens(pixel_values, interpolate_pos_encoding, pixel_attention_mask, spatial_shapes)
            tokens, num_prefix, grid_size, token_mask = read.tokens, read.num_prefix_tokens, read.grid_size, read.mask
        else:
            num_prefix, grid_size = self.token_layout(tokens, grid_size)
        pooling_inputs = {}
        if uniform_queries is not None:
            if not self.probe.pooling.supports_uniform_queries:
                raise ValueError(
                    f"uniform_queries needs a probe with learned queries (EP); the {self.config.pooling_name!r} probe "
                    "has none."
                )
            pooling_inputs["uniform_queries"] = list(uniform_queries)
        tokens = tokens.to(self.probe.classifier.weight.dtype)
        head = self.probe(
            tokens, num_prefix_tokens=num_prefix, grid_size=grid_size, token_mask=token_mask, **pooling_inputs
        )
        logits, loss = mean_over_clips(head.logits, clips), None
        if labels is not None:
            loss_kwargs = {"num_items_in_batch": kwargs["num_items_in_batch"]} if "num_items_in_batch" in kwargs else {}
            loss = self.loss_function(labels, logits, self.config, **loss_kwargs)
        return ProbingOutput(loss=loss, logits=logits, probe_attentions=head.attentions if output_attentions else None)

    # ----------------------------------------------------------------------------------------------------------
    # Construction from a backbone, probe-only saving and loading

    @classmethod
    def from_backbone(
        cls,
        backbone: str | os.PathLike | PreTrainedModel,
        revision: str | None = None,
        hub_kwargs: dict | None = None,
        **config_kwargs,
    ):
        """A new probe on a pretrained backbone.

        Args:
            backbone: Hub id or local path of the backbone (CLIP/SigLIP: the vision tower is used), or a loaded model.
            revision: revision of the backbone on the Hub, recorded in the probe's config.
            hub_kwargs: extra arguments for loading the backbone (``cache_dir``, ``token``, ``dtype``, ...).
            **config_kwargs: fields of the probe config (``num_labels``, ``id2label``, ``num_queries``, ...).
        """
        if isinstance(backbone, (str, os.PathLike)):
            name = str(backbone)
            overrides, project = config_kwargs.get("backbone_overrides"), config_kwargs.get("project_tokens", False)
            backbone = load_backbone(
                name, revision=revision, overrides=overrides, project_tokens=project, **(hub_kwargs or {})
            )
        else:
            name = getattr(backbone, "name_or_path", None) or None
            prepare_loaded_backbone(backbone)
        config = cls.config_class(
            backbone_config=copy.deepcopy(backbone.config),
            backbone_name_or_path=name,
            backbone_revision=revision,
            **config_kwargs,
        )
        return cls(config, backbone=backbone)

    def probe_state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable probe parameters and its BatchNorm statistics: what a probe-only checkpoint holds."""
        return checkpoint_tensors(CheckpointKind.PROBE, self.state_dict())

    def load_probe_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load a probe-only state dict, with a clear error when it was saved from another probe."""
        check_checkpoint_tensors(self.probe_state_dict(), state_dict)
        self.probe.load_state_dict({key[len(PROBE_PREFIX) :]: value for key, value in state_dict.items()})

    def save_pretrained(self, save_directory, *args, save_backbone: bool | None = None, state_dict=None, **kwargs):
        """Save ``config.json`` and ``model.safetensors``, atomically (see `hf_efficient_probing.checkpoint`).

        Args:
            save_backbone: also save the backbone's weights. By default only the probe is saved when the config names
                the backbone (``backbone_name_or_path``); a backbone that is named nowhere is saved with the probe.
                A frozen backbone carrying a `peft` adapter (LoRA) has the adapter saved in ``backbone_adapter/``.
        """
        kind = kind_to_save(self.config, self.backbone, save_backbone)
        state_dict = checkpoint_tensors(kind, state_dict if state_dict is not None else self.state_dict())
        # transformers renames keys to legacy on-disk names by regex for some backbone families (``k_proj`` ->
        # ``attention.key``, ...), which would corrupt probe keys: ours are saved as they are.
        kwargs.setdefault("save_original_format", False)

        def write(folder):
            super(ProbingPreTrainedModel, self).save_pretrained(folder, *args, state_dict=state_dict, **kwargs)
            if kind is CheckpointKind.PROBE_WITH_ADAPTER:  # in peft's own format, beside the probe
                self.backbone.save_pretrained(folder / BACKBONE_ADAPTER_DIR)

        write_checkpoint(save_directory, kind, write)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, backbone=None, **kwargs):
        """Load a probe. A probe-only checkpoint re-attaches the backbone its config names (or ``backbone``, a loaded
        model); a full checkpoint loads as any `transformers` model."""
        finish_interrupted_save(pretrained_model_name_or_path)
        hub_kwargs = {key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}
        if config is None:
            config = AutoConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        weights = resolve_weights(pretrained_model_name_or_path, hub_kwargs)
        kind = recorded_kind(config, weights)
        if kind is CheckpointKind.FULL and (backbone is None or weights is None):
            model = super().from_pretrained(pretrained_model_name_or_path, *model_args, config=config, **kwargs)
            if model.config.freeze_backbone:  # loading re-creates the parameters, trainable again
                model.backbone.requires_grad_(False)
            return model
        if backbone is None:
            if not config.backbone_name_or_path:
                raise ValueError(
                    f"{pretrained_model_name_or_path} holds only a probe and its config names no backbone "
                    "(backbone_name_or_path). Pass the backbone: from_pretrained(..., backbone=model)."
                )
            backbone_kwargs = {key: kwargs[key] for key in _BACKBONE_HUB_KWARGS if key in kwargs}
            backbone = load_backbone(
                config.backbone_name_or_path,
                revision=config.backbone_revision,
                overrides=config.backbone_overrides,
                project_tokens=config.project_tokens,
                **backbone_kwargs,
            )
        if kind is CheckpointKind.PROBE_WITH_ADAPTER:
            adapter_kwargs = {key: hub_kwargs[key] for key in ("cache_dir", "token", "revision") if key in hub_kwargs}
            backbone = load_backbone_adapter(
                backbone, pretrained_model_name_or_path, config.backbone_adapter, **adapter_kwargs
            )
        model = cls(config, backbone=backbone)
        model.load_probe_state_dict(load_file(weights))
        return model.eval()

    def push_to_hub(self, repo_id: str, *, commit_message: str = "Upload probe", private: bool | None = None, **kwargs):
        """Publish a probe repository: probe-only ``model.safetensors``, ``config.json`` naming the backbone, the
        backbone's image processor, a model card and (with ``example_image=``) an attention-map figure.

        Takes the arguments of `hf_efficient_probing.hub.push_probe_to_hub` (``token``, ``revision``, ``card_info``,
        ``example_image``, ``image_processor``, ``run_dir`` for a training run's folder, ...) instead of `transformers`' own, whose card would say
        ``library_name: transformers`` and omit the results.
        """
        return push_probe_to_hub(self, repo_id, commit_message=commit_message, private=private, **kwargs)


# --------------------------------------------------------------------------------------------------------------
# Generic heads (any backbone AutoModel can build); the named heads per backbone family are in `modeling_families`


class VisionModelForEfficientProbing(ProbingPreTrainedModel):
    """Efficient Probing over any vision backbone."""

    config_class = EfficientProbingConfig


class VisionModelForLinearProbing(ProbingPreTrainedModel):
    """Linear probing ([CLS], GAP or both) over any vision backbone."""

    config_class = LinearProbingConfig


class VisionModelForAttentiveProbing(ProbingPreTrainedModel):
    """An attentive-probing baseline of the paper (``config.pooler_type``: aim, jepa, siglip, ...) over any vision
    backbone."""

    config_class = AttentiveProbingConfig


GENERIC_PROBE_CLASSES.update(
    {
        head.config_class.model_type: head
        for head in (VisionModelForEfficientProbing, VisionModelForLinearProbing, VisionModelForAttentiveProbing)
    }
)


def probe_class_for(config: ProbingConfig) -> type[ProbingPreTrainedModel]:
    """The named head for the config's probe kind and backbone family, else the generic head of that kind."""
    return _probe_class(config.model_type, vision_config(config.backbone_config).model_type)


def _probe_class(probe_model_type: str, family: str) -> type[ProbingPreTrainedModel]:
    if probe_model_type not in GENERIC_PROBE_CLASSES:
        raise ValueError(
            f"{probe_model_type!r} is not a probe of hf-efficient-probing; known kinds: {sorted(GENERIC_PROBE_CLASSES)}."
        )
    return NAMED_PROBE_CLASSES.get((probe_model_type, family), GENERIC_PROBE_CLASSES[probe_model_type])


class AutoModelForEfficientProbing:
    """Builds or loads any probe of this library, choosing the head class from the config.

    ```python
    model = AutoModelForEfficientProbing.from_backbone("facebook/vit-mae-base", probe="ep", num_labels=100)
    model = AutoModelForEfficientProbing.from_pretrained("my-probe")  # probe-only: re-attaches its backbone
    ```
    """

    def __init__(self):
        raise OSError("Use AutoModelForEfficientProbing.from_pretrained, from_backbone or from_config.")

    @classmethod
    def from_config(cls, config: ProbingConfig, **kwargs) -> ProbingPreTrainedModel:
        return probe_class_for(config)(config, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs) -> ProbingPreTrainedModel:
        finish_interrupted_save(pretrained_model_name_or_path)
        config = kwargs.pop("config", None)
        if config is None:
            hub_kwargs = {key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}
            config = AutoConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        return probe_class_for(config).from_pretrained(
            pretrained_model_name_or_path, *model_args, config=config, **kwargs
        )

    @classmethod
    def from_backbone(cls, backbone, probe: str = "ep", **kwargs) -> ProbingPreTrainedModel:
        """A new probe of kind ``probe`` (a registered pooling name) on a pretrained backbone."""
        probe_config = probe_config_class(probe)  # an unknown kind fails before a backbone is loaded
        if isinstance(backbone, (str, os.PathLike)):
            name, hub_kwargs = str(backbone), kwargs.pop("hub_kwargs", None) or {}
            overrides, project = kwargs.get("backbone_overrides"), kwargs.get("project_tokens", False)
            backbone = load_backbone(
                name, revision=kwargs.get("revision"), overrides=overrides, project_tokens=project, **hub_kwargs
            )
        if probe_config.model_type == ATTENTIVE_CONFIG_TYPE:
            kwargs["pooler_type"] = probe
        model_class = _probe_class(probe_config.model_type, vision_config(backbone.config).model_type)
        return model_class.from_backbone(backbone, **kwargs)
