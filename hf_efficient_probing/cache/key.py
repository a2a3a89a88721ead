"""What names a token cache: every input that changes the tokens, hashed into one fingerprint.

Two extractions give the same rows only if they run the same backbone weights at the same compute precision, read
the same layers with the same final-norm choice, store them in the same dtype, and see the same images, with the
same labels, after the same preprocessing. The token selection is not an input: a cache stores every token a reader
can ask for ([CLS] + patches, or patches where the backbone has no [CLS]), and each reader slices its own. :class:`CachedSplit` names the data side (the data set's
fingerprint, the split, the image and label columns and the label mapping: the labels are stored in the shards, so a
cache of another label column or mapping would serve wrong labels); :class:`TokenCacheKey` adds the backbone side.
Its fingerprint names the cache directory, ``<source>-layers-<l1>-<l2>``: the hash of every input but the layers (the
*source*: the same backbone pass over the same images), then the layers that directory holds. Directories of one
source are the layer groups a reader's layers are served from (see `cache.view`); a change in any other input
names another source and builds a new cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from ..backbones import TokenReader
from .quantization import token_dtype_name

# 2: the compute precision is part of the key; 3: the columns and the label mapping too; 4: every token of each layer
# stored (no token selection in the key), one tensor per layer in a shard, directories named <source>-layers-<...>;
# 5: 8-bit storage types (float8, int8) with per-token parameters; 6: their prefix tokens kept apart in float16
CACHE_FORMAT_VERSION = 6
LAYERS_MARK = "-layers-"  # between a cache directory's source fingerprint and its layers
# Fields of a config dict that describe where it came from, not what it computes.
_VOLATILE_CONFIG_KEYS = {
    "transformers_version",
    "architectures",
    "_name_or_path",
    "name_or_path",
    "dtype",
    "torch_dtype",
}


def bfloat16_is_native(device: torch.device | str) -> bool:
    """Whether ``device`` runs bfloat16 matrix products in hardware: any CUDA GPU with bf16, or a CPU whose oneDNN
    reports bf16 support (AVX512-BF16 or AMX). Elsewhere bf16 autocast is emulated and slower than float32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


COMPUTE_DTYPES = ("auto", "bfloat16", "float32")


def resolve_compute_dtype(compute_dtype: str, device: torch.device | str) -> str:
    """``"bfloat16"`` or ``"float32"``: the precision the frozen backbone runs at on ``device``.

    ``"auto"`` is bfloat16 autocast where the hardware has it (CUDA, CPUs with AVX512-BF16/AMX) and float32
    elsewhere; ``"float32"`` runs the backbone as loaded (no autocast).
    """
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"The backbone's compute dtype must be one of {COMPUTE_DTYPES}, got {compute_dtype!r}.")
    if compute_dtype == "auto":
        return "bfloat16" if bfloat16_is_native(device) else "float32"
    return compute_dtype


def weights_fingerprint(module: nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return "sha256:" + digest.hexdigest()


def backbone_identity(backbone: nn.Module, name_or_path: str | None = None, revision: str | None = None) -> str:
    """``"<hub id>@<revision>"`` for a backbone named on the Hub, else the hash of its weights.

    A local directory or an unnamed in-memory model can change without changing its name, so it is named by its
    weights. Pin ``revision`` to a commit for a Hub id: a branch such as ``main`` can move under a cache.
    """
    if name_or_path and not os.path.exists(name_or_path):
        return f"{name_or_path}@{revision or 'main'}"
    return weights_fingerprint(backbone)


def dataset_fingerprint(dataset) -> str:
    """The fingerprint `datasets` keeps for a `datasets.Dataset`; other data sets must be named by the caller."""
    fingerprint = getattr(dataset, "_fingerprint", None)
    if not fingerprint:
        raise ValueError(
            f"Cannot fingerprint a {type(dataset).__name__}: pass dataset_fingerprint=... (a string that changes "
            "whenever the data changes), or use a `datasets.Dataset`, which carries its own fingerprint."
        )
    return fingerprint


def preprocessing_description(image_processor=None, transform=None) -> str:
    """A stable description of the preprocessing: the image processor's config and the eval transform's repr.

    torchvision transforms print every parameter in their repr; a custom callable should define a ``__repr__`` that
    does too, or the cache cannot see it change.
    """
    parts = {}
    if image_processor is not None:
        config = image_processor.to_dict() if hasattr(image_processor, "to_dict") else repr(image_processor)
        parts["image_processor"] = config
    if transform is not None:
        parts["transform"] = repr(transform)
    if not parts:
        raise ValueError("Describe the preprocessing: pass the image processor and/or the eval transform.")
    return json.dumps(parts, sort_keys=True, default=str)


@dataclass(frozen=True)
class CachedSplit:
    """The data side of a cache: which rows (a data set's fingerprint and split), which columns (the images read,
    the labels stored), which label mapping (class names by id), and the preprocessing the images went through."""

    dataset: str
    split: str
    preprocessing: str
    image_column: str
    label_column: str
    label_names: tuple[str, ...]


@dataclass(frozen=True)
class TokenCacheKey:
    """Every input of a token extraction. ``fingerprint`` hashes them all."""

    backbone: str
    backbone_config: str
    feature_layers: tuple[int, ...]
    apply_final_norm: bool
    dtype: str
    compute_dtype: str
    preprocessing: str
    dataset: str
    split: str
    image_column: str
    label_column: str
    label_names: tuple[str, ...]
    format_version: int = CACHE_FORMAT_VERSION

    @classmethod
    def from_reader(
        cls,
        backbone: nn.Module,
        reader: TokenReader,
        data: CachedSplit,
        *,
        dtype: str | torch.dtype = "float16",
        compute_dtype: str = "auto",
        device: torch.device | str | None = None,
        backbone_name: tuple[str | None, str | None] = (None, None),
    ) -> TokenCacheKey:
        """The key of ``reader``'s layers of ``backbone`` over ``data`` (every token of them, whatever ``reader``
        selects). ``backbone_name`` is the backbone's Hub id
        and revision (its weights are hashed without one). ``compute_dtype`` is resolved on ``device`` (where the
        extraction runs; the backbone's by default): ``"auto"`` becomes bfloat16 or float32."""
        config = {k: v for k, v in reader.config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
        parameter = next(backbone.parameters())
        return cls(
            backbone=backbone_identity(backbone, *backbone_name) + f"|{parameter.dtype}",
            backbone_config=json.dumps(config, sort_keys=True, default=str),
            feature_layers=reader.layers,
            apply_final_norm=bool(reader.apply_final_norm),
            dtype=token_dtype_name(dtype),
            compute_dtype=resolve_compute_dtype(compute_dtype, device if device is not None else parameter.device),
            preprocessing=data.preprocessing,
            dataset=data.dataset,
            split=data.split,
            image_column=data.image_column,
            label_column=data.label_column,
            label_names=tuple(data.label_names),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    def with_layers(self, feature_layers) -> TokenCacheKey:
        """The key of other layers of the same source."""
        return replace(self, feature_layers=tuple(feature_layers))

    @property
    def source_fingerprint(self) -> str:
        """The hash of every input but the layers: what the layer groups of one backbone pass share."""
        payload = {name: value for name, value in self.to_dict().items() if name != "feature_layers"}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()[:20]

    @property
    def fingerprint(self) -> str:
        """The cache directory's name: the source, then the layers it holds."""
        return layer_group_name(self.source_fingerprint, self.feature_layers)


def layer_group_name(source_fingerprint: str, feature_layers) -> str:
    """``<source>-layers-<l1>-<l2>``: the directory of these layers of one source."""
    return f"{source_fingerprint}{LAYERS_MARK}{'-'.join(map(str, feature_layers))}"
