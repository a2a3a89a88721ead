"""Token caches on disk: safetensors shards, a manifest of the complete ones, and a data set that maps them.

Why safetensors shards rather than Arrow through `datasets`: a shard is one file holding one ``[rows, N, C]`` tensor
that ``safe_open`` memory-maps and slices without a copy of the rest, in any dtype torch has (bfloat16 included);
the file has no code in it (no pickle); and the shard is the unit of resumption, so we control exactly when a row
becomes durable: a shard is written to a temporary file, fsynced, renamed into place, and only then listed in the
manifest (itself replaced atomically) with its size and SHA-256. A run killed at any point leaves either a listed,
verified shard or nothing that is trusted. Arrow would give the mapping too, but its writer owns the file layout
and fingerprints of its own, and a half-written Arrow cache is not something we could resume row-exact.

Layout of one cache (``<cache_root>/<fingerprint>/``)::

    manifest.json            key, token layout, the list of complete shards (file, first row, rows, bytes, sha256)
    shard-00000.safetensors  "tokens" [rows, N, C] in the storage dtype, "labels" [rows] int64
    ...

The cache holds what the backbone returns for the *eval* preprocessing: it trades training-time augmentation for
speed (the backbone runs once instead of once per epoch), as the paper's k-NN protocol and most frozen-feature
evaluations do.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as save_safetensors
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from ..backbones import TokenReader
from .key import TokenCacheKey, normalize_layers, storage_dtype
from .key import dataset_fingerprint as fingerprint_of_dataset
from .layout import TokenLayout

MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".lock"
SHARD_PATTERN = "shard-{:05d}.safetensors"


# ----------------------------------------------------------------------------------------------------------------
# Atomic files


def fsync_directory(directory: str | os.PathLike) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader (or a crash) sees the old file or the new one, never a mix."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_directory(path.parent)


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def exclusive_lock(directory: Path) -> Iterator[None]:
    """One extraction per cache directory at a time; a second one fails at once instead of interleaving shards."""
    with open(directory / LOCK_NAME, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"Another process is extracting into {directory}; wait for it to finish.") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------------------------------------------
# The manifest


@dataclass
class ShardRecord:
    file: str
    start: int
    rows: int
    bytes: int
    sha256: str


class CorruptCacheError(RuntimeError):
    """A shard the manifest lists is missing, truncated or altered."""


class TokenCache:
    """A complete token cache on disk: its manifest and shards. Build one with :func:`extract_tokens`."""

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
    def grid_size(self) -> tuple[int, int]:
        return tuple(self.manifest["grid_size"])

    @property
    def layout(self) -> TokenLayout:
        num_hidden_layers = json.loads(self.key["backbone_config"])["num_hidden_layers"]
        return TokenLayout(self.feature_layers, self.hidden_size, self.num_prefix_tokens, num_hidden_layers)

    def verify(self) -> None:
        """Re-hash every shard; raise :class:`CorruptCacheError` on the first that differs from the manifest."""
        for shard in self.shards:
            check_shard(self.directory, shard)

    def dataset(self, feature_layers=None, token_selection: str | None = None) -> TokenCacheDataset:
        return TokenCacheDataset(self, feature_layers=feature_layers, token_selection=token_selection)

    def __repr__(self) -> str:
        return f"TokenCache({str(self.directory)!r}, rows={self.num_rows}, layers={list(self.feature_layers)})"


def check_shard_size(directory: Path, shard: ShardRecord) -> None:
    path = directory / shard.file
    size = path.stat().st_size if path.exists() else None
    if size != shard.bytes:
        raise CorruptCacheError(
            f"Shard {path} has {size} bytes, the manifest says {shard.bytes}: it is missing or truncated. Run the "
            "extraction again; it re-extracts the shards it cannot trust."
        )


def check_shard(directory: Path, shard: ShardRecord) -> None:
    check_shard_size(directory, shard)
    if sha256_file(directory / shard.file) != shard.sha256:
        raise CorruptCacheError(
            f"Shard {directory / shard.file} does not match its SHA-256 in the manifest (the file was altered). "
            "Run the extraction again; it re-extracts the shards it cannot trust."
        )


# ----------------------------------------------------------------------------------------------------------------
# Extraction


def collate_images(image_key: str, label_key: str):
    def collate(rows):
        pixel_values = torch.stack([torch.as_tensor(row[image_key]) for row in rows])
        labels = torch.tensor([int(row[label_key]) for row in rows], dtype=torch.int64)
        return pixel_values, labels

    return collate


def _trusted_prefix(directory: Path, manifest: dict) -> list[dict]:
    """The listed shards that verify (size and hash), up to the first that does not."""
    trusted = []
    for record in manifest.get("shards", []):
        try:
            check_shard(directory, ShardRecord(**record))
        except CorruptCacheError:
            break
        trusted.append(record)
    return trusted


def _remove_untrusted_files(directory: Path, trusted: list[dict]) -> None:
    """Delete temporary files and shards the manifest does not vouch for (a write a kill interrupted)."""
    keep = {record["file"] for record in trusted}
    for path in directory.iterdir():
        interrupted_write = path.name.startswith(".") and ".tmp-" in path.name
        if interrupted_write or (path.suffix == ".safetensors" and path.name not in keep):
            path.unlink(missing_ok=True)


@torch.no_grad()
def extract_tokens(
    backbone: nn.Module,
    reader: TokenReader,
    dataset: Dataset,
    key: TokenCacheKey,
    cache_root: str | os.PathLike,
    *,
    batch_size: int = 32,
    shard_size: int = 256,
    num_workers: int = 0,
    image_key: str = "pixel_values",
    label_key: str = "labels",
    progress: bool = True,
) -> TokenCache:
    """Run the frozen backbone once over ``dataset`` and store its tokens in ``<cache_root>/<key.fingerprint>``.

    A complete cache with the same key is reused as is. An incomplete one (an earlier run was killed) resumes after
    its last shard that verifies; anything after it is deleted and extracted again. ``dataset`` yields dicts with
    ``image_key`` (a preprocessed ``[3, H, W]`` tensor) and ``label_key`` (an int), in a fixed order.

    Args:
        backbone: the frozen backbone (run in eval mode, without gradients).
        reader: the :class:`~hf_efficient_probing.backbones.TokenReader` deciding layers, tokens and final norm.
        key: the cache key (:meth:`TokenCacheKey.from_reader`); its layers and dtype are what is stored.
        shard_size: rows per shard: the unit of resumption, and of what a kill can cost.
    """
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be positive, got {shard_size} and {batch_size}.")
    if tuple(normalize_layers(reader.feature_layers, reader.config.num_hidden_layers)) != tuple(key.feature_layers):
        raise ValueError(f"The reader reads layers {reader.feature_layers}, the key says {list(key.feature_layers)}.")
    directory = Path(cache_root) / key.fingerprint
    manifest_path = directory / MANIFEST_NAME
    if manifest_path.is_file() and json.loads(manifest_path.read_text()).get("complete"):
        return TokenCache(directory)

    directory.mkdir(parents=True, exist_ok=True)
    num_rows = len(dataset)
    if num_rows == 0:
        raise ValueError("Cannot cache an empty data set split.")
    dtype = storage_dtype(key.dtype)
    with exclusive_lock(directory):
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        key_dict = json.loads(json.dumps(key.to_dict()))  # as the manifest stores it (tuples become lists)
        if manifest and (manifest.get("key") != key_dict or manifest.get("num_rows") != num_rows):
            manifest = {}  # another extraction's leftovers under this name: start over
        if manifest.get("shard_size", shard_size) != shard_size:
            shard_size = manifest["shard_size"]  # resume with the layout already on disk
        trusted = _trusted_prefix(directory, manifest)
        _remove_untrusted_files(directory, trusted)
        manifest = {**manifest, "key": key_dict, "num_rows": num_rows, "shard_size": shard_size}
        manifest.update(shards=trusted, complete=False)

        backbone_mode = backbone.training
        backbone.eval()
        done = sum(record["rows"] for record in trusted)
        collate = collate_images(image_key, label_key)
        bar = tqdm(total=num_rows, initial=done, unit="img", desc="Caching tokens", disable=not progress)
        device = next(backbone.parameters()).device
        try:
            for index, start in enumerate(range(0, num_rows, shard_size)):
                if index < len(trusted):
                    continue
                rows = range(start, min(start + shard_size, num_rows))
                loader = DataLoader(
                    Subset(dataset, rows), batch_size=batch_size, num_workers=num_workers, collate_fn=collate
                )
                token_batches, label_batches = [], []
                for pixel_values, labels in loader:
                    read = reader(backbone, pixel_values.to(device))
                    token_batches.append(read.tokens.to("cpu", dtype))
                    label_batches.append(labels)
                    bar.update(len(labels))
                tokens, labels = torch.cat(token_batches), torch.cat(label_batches)
                if manifest.get("token_shape", list(tokens.shape[1:])) != list(tokens.shape[1:]):
                    raise ValueError(
                        f"Rows {start}-{rows[-1]} give tokens of shape {list(tokens.shape[1:])}, earlier rows "
                        f"{manifest['token_shape']}: every image must reach the backbone at the same size (use the "
                        "deterministic eval transform, which resizes and crops)."
                    )
                data = save_safetensors({"tokens": tokens.contiguous(), "labels": labels})
                name = SHARD_PATTERN.format(index)
                atomic_write_bytes(directory / name, data)
                record = ShardRecord(name, start, len(rows), len(data), hashlib.sha256(data).hexdigest())
                manifest["shards"].append(record.__dict__)
                manifest.update(
                    hidden_size=reader.config.hidden_size,
                    num_prefix_tokens=read.num_prefix_tokens,
                    grid_size=list(read.grid_size),
                    token_shape=list(tokens.shape[1:]),
                )
                manifest["complete"] = start + len(rows) == num_rows
                atomic_write_bytes(manifest_path, json.dumps(manifest, indent=1).encode())
            if not manifest["complete"]:  # every shard was already there, only the flag was not
                manifest["complete"] = True
                atomic_write_bytes(manifest_path, json.dumps(manifest, indent=1).encode())
        finally:
            bar.close()
            backbone.train(backbone_mode)
    return TokenCache(directory)


def cache_tokens_for_model(
    model,
    dataset: Dataset,
    cache_root: str | os.PathLike,
    *,
    preprocessing: str,
    split: str,
    dataset_fingerprint: str | None = None,
    dtype: str | torch.dtype = "float16",
    feature_layers=None,
    token_selection: str | None = None,
    **kwargs,
) -> TokenCache:
    """:func:`extract_tokens` for a probing model: its backbone, its token reader (or other layers/tokens of the same
    backbone) and the backbone id/revision its config names."""
    config = model.config
    reader = model.token_reader
    if feature_layers is not None or token_selection is not None:
        reader = TokenReader(
            config.backbone_config,
            feature_layers if feature_layers is not None else config.feature_layers,
            token_selection or config.token_selection,
            reader.apply_final_norm,
        )
    key = TokenCacheKey.from_reader(
        model.backbone,
        reader,
        preprocessing=preprocessing,
        dataset=dataset_fingerprint or fingerprint_of_dataset(dataset),
        split=split,
        dtype=dtype,
        backbone_name_or_path=config.backbone_name_or_path,
        backbone_revision=config.backbone_revision,
    )
    return extract_tokens(model.backbone, reader, dataset, key, cache_root, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Reading

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
    """Rows of a token cache as ``{"tokens": [N, C], "labels": int}``, read through memory maps.

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
        if not 0 <= row < len(self):
            raise IndexError(f"Row {row} out of range for a cache of {len(self)} rows.")
        lo, hi = 0, len(self.starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if self.starts[mid] <= row else (lo, mid - 1)
        return lo, row - self.starts[lo]

    def tokens(self, row: int) -> torch.Tensor:
        shard, offset = self._locate(row)
        tokens = self._shard_tokens(shard)[offset : offset + 1]
        return self.cache.layout.view(tokens, self.channels, self.reads_cls_token)[0]

    def __getitem__(self, row: int) -> dict[str, torch.Tensor]:
        return {"tokens": self.tokens(row), "labels": self.labels[row]}
