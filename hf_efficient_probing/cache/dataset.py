"""Reading a complete token cache: :class:`TokenCache` (its manifest and shards) and :class:`TokenCacheDataset` (its
rows as ``{"tokens", "labels"}``, read through memory maps).

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

from .layout import TokenLayout
from .manifest import MANIFEST_NAME, CorruptCacheError, ShardRecord, check_shard, check_shard_size


class TokenCache:
    """A complete token cache on disk: its manifest and shards. Build one with `cache.extraction.extract_tokens`.

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
        """The hidden states stored, in channel order (each ``hidden_size`` wide)."""
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

    def dataset(self, feature_layers=None, token_selection: str | None = None) -> TokenCacheDataset:
        """The cached rows as a data set (a view of some of the stored layers and tokens, if asked)."""
        return TokenCacheDataset(self, feature_layers=feature_layers, token_selection=token_selection)

    def __repr__(self) -> str:
        return f"TokenCache({str(self.directory)!r}, rows={self.num_rows}, layers={list(self.feature_layers)})"


# ----------------------------------------------------------------------------------------------------------------
# Reading rows

_SAFETENSORS_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}


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

    Only the labels live in RAM. A row's tokens are a view of its shard's mapped pages, in the storage dtype (the
    probing model casts them to its own): nothing is copied until the collator stacks a batch, and the kernel pages
    the file in and out as needed. ``feature_layers`` and ``token_selection`` pick a view of the
    cache: a subset of the stored layers (in the order given), and ``"patch"`` to drop a stored [CLS] token.
    """

    def __init__(self, cache: TokenCache | str | os.PathLike, feature_layers=None, token_selection: str | None = None):
        self.cache = cache if isinstance(cache, TokenCache) else TokenCache(cache)
        self.starts = [shard.start for shard in self.cache.shards]
        layout = self.cache.layout
        self.channels = None if feature_layers is None else layout.view_index(feature_layers)
        self.reads_cls_token = bool(layout.num_prefix_tokens) if token_selection is None else token_selection == "all"
        layout.check_view(self.reads_cls_token)
        self._maps: dict[int, torch.Tensor] = {}
        self._pid = os.getpid()
        labels = []
        for shard in self.cache.shards:
            with safe_open(str(self.cache.directory / shard.file), framework="pt") as handle:
                labels.append(handle.get_tensor("labels"))
        self.labels = torch.cat(labels)

    def __len__(self) -> int:
        return self.cache.num_rows

    def _shard_tokens(self, index: int) -> torch.Tensor:
        """``[rows, N, C]`` tokens of shard ``index``: a view of the file's pages, mapped once per process."""
        if self._pid != os.getpid():  # a DataLoader worker: mappings are per process
            self._maps, self._pid = {}, os.getpid()
        if index not in self._maps:
            self._maps[index] = map_safetensors_tensor(self.cache.directory / self.cache.shards[index].file, "tokens")
        return self._maps[index]

    def __getstate__(self):
        return {**self.__dict__, "_maps": {}}  # workers map the files themselves

    def _locate(self, row: int) -> tuple[int, int]:
        """``(shard index, row within it)``: the last shard starting at or before ``row``."""
        if not 0 <= row < len(self):
            raise IndexError(f"Row {row} out of range for a cache of {len(self)} rows.")
        shard = bisect.bisect_right(self.starts, row) - 1
        return shard, row - self.starts[shard]

    def tokens(self, row: int) -> torch.Tensor:
        shard, offset = self._locate(row)
        tokens = self._shard_tokens(shard)[offset : offset + 1]
        return self.cache.layout.view(tokens, self.channels, self.reads_cls_token)[0]

    def __getitem__(self, row: int) -> dict[str, torch.Tensor]:
        return {"tokens": self.tokens(row), "labels": self.labels[row]}
