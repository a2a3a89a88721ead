"""Reading complete token caches: :class:`TokenCache` (one directory, a layer group: its manifest and shards),
:class:`TokenCacheView` (the layers and tokens one reader reads, served from one or more layer groups of a source) and
:class:`TokenCacheDataset` (a view's rows as ``{"tokens", "labels"}``, read through memory maps).

Why safetensors shards rather than Arrow through `datasets`: a shard is one file holding one ``[rows, N, C]`` tensor
that can be memory-mapped and sliced without a copy of the rest, in any dtype torch has (bfloat16 included); the file
has no code in it (no pickle); and the shard is the unit of resumption, so the extraction controls exactly when a row
becomes durable. The cache holds what the backbone returns for the *eval* preprocessing: it trades training-time
augmentation for speed, as the paper's k-NN protocol and most frozen-feature evaluations do.
"""

from __future__ import annotations

import bisect
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from torch.utils.data import Dataset

from ..backbones import normalize_layers
from .layout import TokenLayout
from .manifest import MANIFEST_NAME, CorruptCacheError, ShardRecord, check_shard, check_shard_size
from .quantization import decode, token_storage

TOKEN_SELECTIONS = ("patch", "all")


def shard_tensor_name(part: str, layer: int) -> str:
    """The name of one layer's ``part`` in a shard: ``tokens.<layer>`` (``[rows, N, C]``; for the 8-bit types the
    patches' codes, with ``scale.<layer>``, ``zero.<layer>`` and ``prefix.<layer>``: see `cache.quantization`)."""
    return f"{part}.{layer}"


class TokenCache:
    """A complete token cache on disk, one layer group of a source: its manifest and shards, every token ([CLS] first
    when the backbone has one) of each of its layers. Build one with `cache.extraction.extract_tokens`.

    Opening it checks that every listed shard has its recorded size; :meth:`verify` re-hashes them (the extraction
    does so before it reuses a cache)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        manifest_path = self.directory / MANIFEST_NAME
        if not manifest_path.is_file():
            raise FileNotFoundError(f"No token cache at {self.directory} ({MANIFEST_NAME} is missing).")
        self.manifest = json.loads(manifest_path.read_text())
        if not self.manifest.get("complete"):
            raise RuntimeError(
                f"The token cache at {self.directory} is incomplete ({self.num_complete_rows} of "
                f"{self.manifest['num_rows']} rows): run the extraction again to resume it."
            )
        self.shards = [ShardRecord(**record) for record in self.manifest["shards"]]
        for shard in self.shards:
            check_shard_size(self.directory, shard)
        self.extraction_report: dict = {}

    @property
    def key(self) -> dict:
        return self.manifest["key"]

    @property
    def num_rows(self) -> int:
        return self.manifest["num_rows"]

    @property
    def num_complete_rows(self) -> int:
        return sum(record["rows"] for record in self.manifest["shards"])

    @property
    def feature_layers(self) -> tuple[int, ...]:
        """The hidden states stored (one tensor each, ``hidden_size`` wide)."""
        return tuple(self.key["feature_layers"])

    @property
    def hidden_size(self) -> int:
        return self.manifest["hidden_size"]

    @property
    def num_prefix_tokens(self) -> int:
        """1 when the [CLS] token is stored first, else 0."""
        return self.manifest["num_prefix_tokens"]

    @property
    def grid_size(self) -> tuple[int, int] | None:
        grid = self.manifest["grid_size"]
        return tuple(grid) if grid else None

    @property
    def layout(self) -> TokenLayout:
        return TokenLayout(
            self.feature_layers, self.hidden_size, self.num_prefix_tokens, self.manifest["num_hidden_layers"]
        )

    def verify(self, shards: range | None = None) -> None:
        """Re-hash the shards (those of ``shards``, by index; all by default); raise :class:`CorruptCacheError` on
        the first that differs from the manifest."""
        for index in shards if shards is not None else range(len(self.shards)):
            check_shard(self.directory, self.shards[index])

    @property
    def view(self) -> TokenCacheView:
        """Everything this directory stores, as one view (its layers in order, every token)."""
        selection = "all" if self.num_prefix_tokens else "patch"
        return TokenCacheView((self,), self.feature_layers, selection, self.extraction_report)

    def dataset(self, feature_layers=None, token_selection: str | None = None) -> TokenCacheDataset:
        """The cached rows as a data set (a view of some of the stored layers and tokens, if asked)."""
        return self.view.dataset(feature_layers, token_selection)

    def __repr__(self) -> str:
        return f"TokenCache({str(self.directory)!r}, rows={self.num_rows}, layers={list(self.feature_layers)})"


class TokenCacheView:
    """The tokens one reader reads (``feature_layers`` in its order, ``token_selection``), served by slicing rows of
    the layer groups ``groups`` of one source (each layer from the first group that holds it).

    Attributes:
        extraction_report: what building it cost (see `cache.extraction.extract_tokens`), all groups together.
    """

    def __init__(self, groups, feature_layers, token_selection: str, extraction_report: dict | None = None):
        if token_selection not in TOKEN_SELECTIONS:
            raise ValueError(f"token_selection must be one of {TOKEN_SELECTIONS}, got {token_selection!r}.")
        self.groups = tuple(groups)
        if len({group.num_rows for group in self.groups}) > 1:
            raise CorruptCacheError(f"Layer groups of one source hold different rows: {self.groups}.")
        self.feature_layers = self.check_layers(feature_layers)
        self.token_selection = token_selection
        self.extraction_report = extraction_report or {}
        if token_selection == "all" and not self.num_prefix_tokens:
            raise ValueError("This reader reads the [CLS] token, but the backbone has none: read patches only.")

    def check_layers(self, feature_layers) -> tuple[int, ...]:
        """``feature_layers`` non-negative, each held by some group, else a clear error."""
        stored = [layer for group in self.groups for layer in group.feature_layers]
        wanted = normalize_layers(feature_layers, self.groups[0].manifest["num_hidden_layers"])
        missing = [layer for layer in wanted if layer not in stored]
        if missing:
            raise ValueError(f"The tokens hold layers {sorted(set(stored))}, not {missing}: cache those layers too.")
        return wanted

    def group_of(self, layer: int) -> int:
        """The index of the group that serves ``layer``."""
        return next(index for index, group in enumerate(self.groups) if layer in group.feature_layers)

    @property
    def num_rows(self) -> int:
        return self.groups[0].num_rows

    @property
    def hidden_size(self) -> int:
        return self.groups[0].hidden_size

    @property
    def num_prefix_tokens(self) -> int:
        """What the groups store before the patches: 1 for a [CLS] token, else 0."""
        return self.groups[0].num_prefix_tokens

    @property
    def grid_size(self) -> tuple[int, int] | None:
        return self.groups[0].grid_size

    @property
    def layout(self) -> TokenLayout:
        """The layout of this view's rows (its layers along channels, [CLS] first when it reads it)."""
        num_hidden_layers = self.groups[0].manifest["num_hidden_layers"]
        prefix = int(self.token_selection == "all")
        return TokenLayout(self.feature_layers, self.hidden_size, prefix, num_hidden_layers)

    def dataset(self, feature_layers=None, token_selection: str | None = None) -> TokenCacheDataset:
        """The rows as a data set: this view's layers and tokens, or others the groups hold."""
        return TokenCacheDataset(self, feature_layers=feature_layers, token_selection=token_selection)

    def verify(self) -> None:
        for group in self.groups:
            group.verify()

    def __repr__(self) -> str:
        return (
            f"TokenCacheView(layers={list(self.feature_layers)}, {self.token_selection!r}, groups={list(self.groups)})"
        )


# ----------------------------------------------------------------------------------------------------------------
# Reading rows

_SAFETENSORS_DTYPES = {
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F8_E4M3": torch.float8_e4m3fn,
    "U8": torch.uint8,
}


def map_safetensors_tensor(path: Path, name: str) -> torch.Tensor:
    """Tensor ``name`` of a safetensors file as a read-only-in-spirit view of the file mapped into memory.

    ``safe_open(...).get_slice`` copies each slice into fresh memory; for one row at a time that is an allocation
    per row. Mapping the file (copy-on-write, so writes never reach it) and viewing the tensor's bytes in place
    makes a row a view, and a batch one copy. The header is parsed as the format defines it: an 8-byte little-endian
    length, a JSON header, then the data at the header's offsets.
    """
    size = path.stat().st_size
    with open(path, "rb") as file:
        header_length = int.from_bytes(file.read(8), "little")
        if not 0 < header_length <= size - 8:
            raise CorruptCacheError(f"{path} is not a safetensors file (header length {header_length}).")
        entry = json.loads(file.read(header_length))[name]
    dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
    begin, end = (8 + header_length + offset for offset in entry["data_offsets"])
    file_bytes = torch.from_file(str(path), shared=False, size=size, dtype=torch.uint8)
    return file_bytes[begin:end].view(dtype).view(entry["shape"])


class TokenCacheDataset(Dataset):
    """Rows of a token cache as ``{"tokens": [N, C], "labels": ...}`` (a class index, or a multi-label data set's
    multi-hot vector), read through memory maps.

    Only the labels live in RAM. A row's layer is a view of its shard's mapped pages, in the storage dtype (the
    probing model casts them to its own), or, for an 8-bit type, dequantised from them to float32: a row of one
    float layer is a view, of several one concatenation, and the kernel pages the files in and out as needed. ``feature_layers`` and ``token_selection`` pick another view than
    ``source``'s own: other stored layers (in the order given), ``"patch"`` to drop the [CLS] token or ``"all"`` to
    keep it.
    """

    def __init__(
        self, source: TokenCacheView | TokenCache | str | os.PathLike, feature_layers=None, token_selection=None
    ):
        view = source if isinstance(source, TokenCacheView) else as_cache(source).view
        self.view = TokenCacheView(
            view.groups,
            view.feature_layers if feature_layers is None else feature_layers,
            token_selection or view.token_selection,
            view.extraction_report,
        )
        self.groups = self.view.groups
        self.sources = [(self.view.group_of(layer), layer) for layer in self.view.feature_layers]
        self.token_dtypes = [group.key["dtype"] for group in self.groups]
        self.drop_prefix = self.view.num_prefix_tokens if self.view.token_selection == "patch" else 0
        self.reads_prefix = bool(self.view.num_prefix_tokens) and not self.drop_prefix  # 8-bit: kept apart, float16
        self.starts = [[shard.start for shard in group.shards] for group in self.groups]
        self._maps: dict[tuple[int, int, str], torch.Tensor] = {}
        self._pid = os.getpid()
        labels = []
        for shard in self.groups[0].shards:
            with safe_open(str(self.groups[0].directory / shard.file), framework="pt") as handle:
                labels.append(handle.get_tensor("labels"))
        self.labels = torch.cat(labels)

    @property
    def cache(self) -> TokenCacheView:
        return self.view

    def __len__(self) -> int:
        return self.view.num_rows

    def _shard_tensor(self, group: int, shard: int, name: str) -> torch.Tensor:
        """Tensor ``name`` of a group's shard: a view of the file's pages, mapped once per process."""
        if self._pid != os.getpid():  # a DataLoader worker: mappings are per process
            self._maps, self._pid = {}, os.getpid()
        if (group, shard, name) not in self._maps:
            cache = self.groups[group]
            self._maps[group, shard, name] = map_safetensors_tensor(cache.directory / cache.shards[shard].file, name)
        return self._maps[group, shard, name]

    def __getstate__(self):
        return {**self.__dict__, "_maps": {}}  # workers map the files themselves

    def _locate(self, group: int, row: int) -> tuple[int, int]:
        """``(shard index, row within it)`` in ``group``: its last shard starting at or before ``row``."""
        if not 0 <= row < len(self):
            raise IndexError(f"Row {row} out of range for a cache of {len(self)} rows.")
        starts = self.starts[group]
        shard = bisect.bisect_right(starts, row) - 1
        return shard, row - starts[shard]

    def tokens(self, row: int) -> torch.Tensor:
        layers = []
        for group, layer in self.sources:
            shard, offset = self._locate(group, row)
            token_dtype = self.token_dtypes[group]
            storage = token_storage(token_dtype)
            if not storage.quantized:
                stored = self._shard_tensor(group, shard, shard_tensor_name("tokens", layer))[offset]
                layers.append(stored[self.drop_prefix :])
                continue
            names = ("tokens", *storage.parameters, *(("prefix",) if self.reads_prefix else ()))
            parts = {name: self._shard_tensor(group, shard, shard_tensor_name(name, layer))[offset] for name in names}
            layers.append(decode(parts, token_dtype))
        return layers[0] if len(layers) == 1 else torch.cat(layers, dim=-1)

    def __getitem__(self, row: int) -> dict[str, torch.Tensor]:
        return {"tokens": self.tokens(row), "labels": self.labels[row]}


def as_cache(cache: TokenCache | str | os.PathLike) -> TokenCache:
    return cache if isinstance(cache, TokenCache) else TokenCache(cache)
