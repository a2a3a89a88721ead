"""Probes as `transformers` image-classification heads over a frozen backbone.

``backbone -> TokenReader -> ProbeHead (pooling -> BatchNorm -> classifier)``. The generic classes work with any
backbone `AutoModel` can build; the named classes (``ViTMAEForEfficientProbing``, ...) are the same model pinned to
one backbone family, so that a wrong backbone fails early and the class name says what it probes.

Checkpoints are probe-only by default, in the spirit of a `peft` adapter: ``model.safetensors`` holds the probe
(a few MB) and ``config.json`` names the backbone by id and revision; ``from_pretrained`` loads that backbone and
then the probe.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.utils import cached_file, logging

from .backbones import (
    TokenReader,
    build_backbone,
    layer_states,
    load_backbone,
    load_backbone_adapter,
    prepare_loaded_backbone,
    vision_config,
)
from .configuration_probing import AttentiveProbingConfig, EfficientProbingConfig, LinearProbingConfig, ProbingConfig
from .probes import BASELINE_POOLINGS, ProbeHead, build_pooling

PROBE_PREFIX = "probe."
BACKBONE_PREFIX = "backbone."
SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PICKLE_WEIGHTS_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
BACKBONE_ADAPTER_DIR = "backbone_adapter"
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
_BACKBONE_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "dtype")
logger = logging.get_logger(__name__)
STAGING_PREFIX = ".saving-"
STAGED_FILES = ".staged.json"  # written last into a staging folder: its files are complete, they can be moved


def _mark_staging_complete(staging: Path) -> None:
    names = sorted(os.listdir(staging))
    (staging / f"{STAGED_FILES}.tmp").write_text(json.dumps(names))
    os.replace(staging / f"{STAGED_FILES}.tmp", staging / STAGED_FILES)  # atomic: the list is whole or absent


def _commit_staging(staging: Path, save_directory: Path) -> None:
    """Move a complete staging folder's files into ``save_directory`` (``config.json`` last), replacing the
    previous checkpoint's files and deleting its stale shards, then remove the folder. Running it again after a
    kill part-way finishes the same moves: the list of files to move is the one written when staging ended."""
    names = json.loads((staging / STAGED_FILES).read_text())
    for stale in [*save_directory.glob("model*.safetensors*"), save_directory / BACKBONE_ADAPTER_DIR]:
        if stale.name not in names and stale.exists():
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    for name in sorted(names, key=lambda name: name == "config.json"):
        if not (staging / name).exists():  # moved before a kill
            continue
        if (save_directory / name).is_dir():
            shutil.rmtree(save_directory / name)
        os.replace(staging / name, save_directory / name)
    shutil.rmtree(staging)


def finish_interrupted_save(save_directory: str | os.PathLike, discard_incomplete: bool = False) -> None:
    """Make a local checkpoint directory whole after a save that was killed: a save killed while moving its files
    into place is finished (its files were all written; the previous checkpoint is untouched until then). With
    ``discard_incomplete`` (before a new save), staging folders of saves killed while writing are removed; a load
    leaves them, as they may belong to a save still running. A directory without leftovers, or a Hub id, is left
    as it is."""
    save_directory = Path(save_directory)
    if not save_directory.is_dir():
        return
    for staging in sorted(save_directory.glob(f"{STAGING_PREFIX}*")):
        if (staging / STAGED_FILES).is_file():
            logger.warning("Finishing the save to %s that was interrupted while moving its files.", save_directory)
            _commit_staging(staging, save_directory)
        elif discard_incomplete:
            shutil.rmtree(staging, ignore_errors=True)


@dataclass
class ProbingOutput(ImageClassifierOutput):
    """`ImageClassifierOutput` plus ``probe_attentions`` ``[B, Q, N]``: each probe query's (or head's) attention
    over the ``N`` tokens it read, returned with ``output_attentions=True`` by poolings that attend."""

    probe_attentions: torch.FloatTensor | None = None


# Config fields that fix a backbone's architecture in some family or other (compared when both configs have them).
_ARCHITECTURE_FIELDS = ("hidden_size", "hidden_sizes", "embed_dim", "patch_size", "image_size", "architecture")


def check_backbone_matches(expected: dict | object, backbone_config, feature_layers=None, token_width=None) -> None:
    """Fail clearly when a probe meets a backbone of another family, width or patch grid than it was trained on
    (``token_width``: the width the probe reads from ``feature_layers``, checked against the tokens the backbone
    really gives)."""
    expected = vision_config(expected)
    actual = vision_config(backbone_config)

    def described(config) -> str:
        fields = {name: getattr(config, name) for name in _ARCHITECTURE_FIELDS if hasattr(config, name)}
        return f"{config.model_type!r}, " + ", ".join(f"{name}={value!r}" for name, value in fields.items())

    for attribute in ("model_type", *_ARCHITECTURE_FIELDS):
        want, got = getattr(expected, attribute, None), getattr(actual, attribute, None)
        if want != got:
            raise ValueError(
                f"This probe was built for a {expected.model_type!r} backbone with {attribute}={want!r}, but the "
                f"backbone given has {attribute}={got!r} ({described(actual)}). Load the probe onto the backbone it "
                "was trained on."
            )
    if token_width is not None:
        got = layer_states(actual, feature_layers)[0].width * len(feature_layers)
        if got != token_width:
            raise ValueError(
                f"This probe reads tokens of width {token_width} (layers {list(feature_layers)}), but the backbone "
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
            check_backbone_matches(config.backbone_config, backbone.config, config.feature_layers, config.token_width)
        self.token_reader = TokenReader(
            config.backbone_config, config.feature_layers, config.token_selection, config.apply_final_norm
        )
        pooling = build_pooling(config.pooling_name, config.token_width, **config.pooling_kwargs())
        self.probe = ProbeHead(pooling, config.num_labels, config.batch_norm_eps)
        self.post_init()
        # Attached after `post_init` so that initialisation never touches pretrained backbone weights.
        self.backbone = backbone if backbone is not None else build_backbone(config.backbone_config)
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

    def default_grid_size(self, num_patches: int) -> tuple[int, int] | None:
        """Patch grid of cached tokens: the grid the layers read have at the backbone's native image size, or a
        square one when the count differs (``None`` when no grid fits, e.g. padded NaFlex tokens)."""
        native = layer_states(self.token_reader.config, self.config.feature_layers)[0].grid_size
        if native is not None and native[0] * native[1] == num_patches:
            return native
        side = int(round(num_patches**0.5))
        return (side, side) if side * side == num_patches else None

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
        **kwargs,
    ) -> ProbingOutput:
        r"""
        Args:
            pixel_values: ``[B, 3, H, W]`` images prepared by the backbone's image processor.
            labels: ``[B]`` class indices; a loss is returned when given.
            tokens: instead of images, the tokens the probe reads (e.g. from a token cache): ``[B, N, D]`` with the
                [CLS] token first when the config reads it. The backbone is not run.
            grid_size: patch grid of ``tokens`` (defaults to the backbone's native grid).
            token_mask: ``[B, N]`` for ``tokens``, ``True`` for real tokens and ``False`` for padding, which every
                pooling ignores (NaFlex tokens of images of different sizes, padded to one length).
            output_attentions: return ``probe_attentions``.
            pixel_attention_mask, spatial_shapes: NaFlex (SigLIP2) inputs, as its image processor returns them
                with patchified ``pixel_values``; the padding patches they mark are ignored by the probe.
        """
        if tokens is None:
            if pixel_values is None:
                raise ValueError("Pass either pixel_values (images) or tokens (e.g. from a token cache).")
            backbone_grad = torch.is_grad_enabled() and not self.config.freeze_backbone
            with torch.set_grad_enabled(backbone_grad):
                read = self.token_reader(
                    self.backbone, pixel_values, interpolate_pos_encoding, pixel_attention_mask, spatial_shapes
                )
            tokens, num_prefix, grid_size, token_mask = read.tokens, read.num_prefix_tokens, read.grid_size, read.mask
        else:
            num_prefix = int(self.config.reads_cls_token)
            grid_size = grid_size or self.default_grid_size(tokens.shape[1] - num_prefix)
        tokens = tokens.to(self.probe.classifier.weight.dtype)
        head = self.probe(tokens, num_prefix_tokens=num_prefix, grid_size=grid_size, token_mask=token_mask)
        loss = None
        if labels is not None:
            loss_kwargs = {"num_items_in_batch": kwargs["num_items_in_batch"]} if "num_items_in_batch" in kwargs else {}
            loss = self.loss_function(labels, head.logits, self.config, **loss_kwargs)
        return ProbingOutput(
            loss=loss, logits=head.logits, probe_attentions=head.attentions if output_attentions else None
        )

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
            backbone = load_backbone(name, revision=revision, **(hub_kwargs or {}))
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
        return {PROBE_PREFIX + key: value for key, value in self.probe.state_dict().items()}

    def load_probe_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load a probe-only state dict, with a clear error when it was saved from another probe."""
        probe_state = {k[len(PROBE_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(PROBE_PREFIX)}
        own = self.probe.state_dict()
        missing = sorted(set(own) - set(probe_state))
        unexpected = sorted(set(state_dict) - {PROBE_PREFIX + k for k in own})
        wrong_shape = [
            f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
            for k, v in probe_state.items()
            if k in own and v.shape != own[k].shape
        ]
        if missing or unexpected or wrong_shape:
            raise ValueError(
                "The checkpoint does not hold this probe. "
                f"Missing: {missing or 'none'}; unexpected: {unexpected or 'none'}; "
                f"shape mismatches: {wrong_shape or 'none'}. Check that the config matches the weights."
            )
        self.probe.load_state_dict(probe_state)

    def save_pretrained(self, save_directory, *args, save_backbone: bool | None = None, state_dict=None, **kwargs):
        """Save ``config.json`` and ``model.safetensors``.

        Args:
            save_backbone: also save the backbone's weights. By default only the probe is saved when the config names
                the backbone (``backbone_name_or_path``); a backbone that is named nowhere is saved with the probe.
                A frozen backbone carrying a `peft` adapter (LoRA) has the adapter saved in ``backbone_adapter/``.
        """
        if save_backbone is None:
            save_backbone = not self.config.backbone_name_or_path or not self.config.freeze_backbone
        if not save_backbone:
            if not self.config.backbone_name_or_path:
                raise ValueError(
                    "A probe-only checkpoint must name its backbone, but config.backbone_name_or_path is not set. "
                    "Set it to the backbone's Hub id or path, or save with save_backbone=True."
                )
            state_dict = state_dict if state_dict is not None else self.state_dict()
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith(BACKBONE_PREFIX)}
        # A `peft` adapter trained on the backbone (LoRA) is saved beside the probe, in peft's own format.
        adapter = not save_backbone and hasattr(self.backbone, "peft_config")
        self.config.backbone_adapter = BACKBONE_ADAPTER_DIR if adapter else None
        # Write everything to a staging folder first and move the files into place only once all are written, so
        # that a full disk or a killed process never leaves a half-written checkpoint over the previous one.
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        finish_interrupted_save(save_directory, discard_incomplete=True)
        staging = Path(tempfile.mkdtemp(dir=save_directory, prefix=STAGING_PREFIX))
        try:
            # transformers renames keys to legacy on-disk names by regex for some backbone families (``k_proj`` ->
            # ``attention.key``, ...), which would corrupt probe keys: ours are saved as they are.
            kwargs.setdefault("save_original_format", False)
            super().save_pretrained(staging, *args, state_dict=state_dict, **kwargs)
            if adapter:
                self.backbone.save_pretrained(staging / BACKBONE_ADAPTER_DIR)
            _mark_staging_complete(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _commit_staging(staging, save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, backbone=None, **kwargs):
        """Load a probe. A probe-only checkpoint re-attaches the backbone its config names (or ``backbone``, a loaded
        model); a full checkpoint loads as any `transformers` model."""
        finish_interrupted_save(pretrained_model_name_or_path)
        hub_kwargs = {key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}
        if config is None:
            config = AutoConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        weights = _resolve_weights(pretrained_model_name_or_path, hub_kwargs)
        if weights is None or (backbone is None and _holds_backbone(weights)):
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
            backbone = load_backbone(config.backbone_name_or_path, revision=config.backbone_revision, **backbone_kwargs)
        if config.backbone_adapter:
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
        ``example_image``, ``image_processor``, ...) instead of `transformers`' own, whose card would say
        ``library_name: transformers`` and omit the results.
        """
        from .hub import push_probe_to_hub  # the hub layer builds on the models: import it only when publishing

        return push_probe_to_hub(self, repo_id, commit_message=commit_message, private=private, **kwargs)


def _resolve_weights(name_or_path, hub_kwargs: dict) -> str | None:
    """Path of the single-file safetensors checkpoint; ``None`` for a sharded one. Pickle-only repos are refused."""
    optional = {"_raise_exceptions_for_missing_entries": False, "_raise_exceptions_for_connection_errors": False}
    weights = cached_file(name_or_path, SAFE_WEIGHTS_NAME, **hub_kwargs, **optional)
    if weights is not None:
        return weights
    if cached_file(name_or_path, SAFE_WEIGHTS_INDEX_NAME, **hub_kwargs, **optional) is not None:
        return None
    for pickle_name in PICKLE_WEIGHTS_NAMES:
        if cached_file(name_or_path, pickle_name, **hub_kwargs, **optional) is not None:
            raise OSError(
                f"{name_or_path} holds only pickle weights ({pickle_name}). hf-efficient-probing reads safetensors "
                "only, because unpickling can run arbitrary code. Convert the weights to model.safetensors."
            )
    raise OSError(f"No {SAFE_WEIGHTS_NAME} found in {name_or_path}.")


def _holds_backbone(weights: str) -> bool:
    with safe_open(weights, framework="pt") as checkpoint:
        return any(key.startswith(BACKBONE_PREFIX) for key in checkpoint.keys())


# --------------------------------------------------------------------------------------------------------------
# Generic heads (any backbone AutoModel can build) and named heads per backbone family


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


GENERIC_PROBE_CLASSES: dict[str, type[ProbingPreTrainedModel]] = {
    EfficientProbingConfig.model_type: VisionModelForEfficientProbing,
    LinearProbingConfig.model_type: VisionModelForLinearProbing,
    AttentiveProbingConfig.model_type: VisionModelForAttentiveProbing,
}

# Named heads, ``<prefix>ForEfficientProbing``, ``<prefix>ForLinearProbing`` and ``<prefix>ForAttentiveProbing``,
# for every family of the backbone table: the generic head pinned to that family.
FAMILY_CLASS_PREFIXES: dict[str, str] = {
    "vit": "ViT",
    "vit_mae": "ViTMAE",
    "vit_msn": "ViTMSN",
    "deit": "DeiT",
    "beit": "Beit",
    "data2vec-vision": "Data2VecVision",
    "ijepa": "IJepa",
    "dinov2": "Dinov2",
    "dinov2_with_registers": "Dinov2WithRegisters",
    "dinov3_vit": "DINOv3ViT",
    "clip_vision_model": "CLIPVision",
    "siglip_vision_model": "SiglipVision",
    "siglip2_vision_model": "Siglip2Vision",
    "convnext": "ConvNext",
    "convnextv2": "ConvNextV2",
    "resnet": "ResNet",
    "regnet": "RegNet",
    "efficientnet": "EfficientNet",
    "mobilenet_v2": "MobileNetV2",
    "mobilevit": "MobileViT",
    "vitdet": "VitDet",
    "swin": "Swin",
    "swinv2": "Swinv2",
    "focalnet": "FocalNet",
    "hiera": "Hiera",
    "pvt": "Pvt",
    "levit": "Levit",
    "timm_wrapper": "TimmWrapper",
}


def _named_head(generic: type[ProbingPreTrainedModel], prefix: str, family: str) -> type[ProbingPreTrainedModel]:
    name = prefix + generic.__name__.removeprefix("VisionModel")
    doc = generic.__doc__.split(" over any vision backbone")[0] + f" over a {family!r} backbone."
    return type(name, (generic,), {"backbone_model_type": family, "__module__": __name__, "__doc__": doc})


NAMED_PROBE_CLASSES: dict[tuple[str, str], type[ProbingPreTrainedModel]] = {}
for _family, _prefix in FAMILY_CLASS_PREFIXES.items():
    for _generic in GENERIC_PROBE_CLASSES.values():
        _head = _named_head(_generic, _prefix, _family)
        globals()[_head.__name__] = _head
        NAMED_PROBE_CLASSES[(_generic.config_class.model_type, _family)] = _head

PROBE_CONFIGS: dict[str, type[ProbingConfig]] = {
    EfficientProbingConfig.pooling_name: EfficientProbingConfig,
    LinearProbingConfig.pooling_name: LinearProbingConfig,
    **{name: AttentiveProbingConfig for name in BASELINE_POOLINGS},
}


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
        if probe not in PROBE_CONFIGS:
            raise ValueError(f"Unknown probe {probe!r}; choose one of {sorted(PROBE_CONFIGS)}.")
        if isinstance(backbone, (str, os.PathLike)):
            backbone = load_backbone(str(backbone), revision=kwargs.get("revision"), **kwargs.pop("hub_kwargs", {}))
        probe_config = PROBE_CONFIGS[probe]
        if probe_config is AttentiveProbingConfig:
            kwargs["pooler_type"] = probe
        model_class = _probe_class(probe_config.model_type, vision_config(backbone.config).model_type)
        return model_class.from_backbone(backbone, **kwargs)
