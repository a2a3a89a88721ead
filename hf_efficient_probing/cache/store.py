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

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import filelock
import torch
from safetensors import safe_open
from safetensors.torch import save as save_safetensors
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..atomic import atomic_write_bytes
from ..backbones import TokenReader
from .key import TokenCacheKey, normalize_layers, storage_dtype
from .key import dataset_fingerprint as fingerprint_of_dataset
from .layout import TokenLayout
from .location import default_cache_root

MANIFEST_NAME = "manifest.json"
LOCK_PATTERN = ".lock-rank{:03d}"
RANK_RECORDS_PATTERN = "shards-rank{:03d}.json"  # the shards one rank has written, until the manifest lists them all
RANK_RECORDS_GLOB = "shards-rank*.json"
SHARD_PATTERN = "shard-{:05d}.safetensors"


# ----------------------------------------------------------------------------------------------------------------
# Atomic files


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def exclusive_lock(directory: Path, rank: int = 0) -> Iterator[None]:
    """One extraction per cache directory and rank at a time: a second one fails at once instead of interleaving
    shards. ``filelock`` works on every platform (the POSIX-only ``fcntl`` did not)."""
    lock = filelock.FileLock(directory / LOCK_PATTERN.format(rank))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise RuntimeError(
            f"Another process is extracting into {directory} as rank {rank}; wait for it to finish."
        ) from None
    try:
        yield
    finally:
        lock.release()


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
    def grid_size(self) -> tuple[int, int] | None:
        grid = self.manifest["grid_size"]
        return tuple(grid) if grid else None

    @property
    def layout(self) -> TokenLayout:
        num_hidden_layers = self.manifest.get("num_hidden_layers")
        if num_hidden_layers is None:  # written before the count was stored: ViT-like backbones only
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


def process_slot() -> tuple[int, int]:
    """``(rank, world size)`` of this process among those extracting together.

    Under ``accelerate launch``/``torchrun`` (``WORLD_SIZE`` > 1) accelerate's ``PartialState`` joins, or reuses,
    the process group, so a caller simply calls the extraction on every rank; a plain process is ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        state = PartialState(cpu=not torch.cuda.is_available())
        return state.process_index, state.num_processes
    return 0, 1


def _wait_for_everyone(world_size: int) -> None:
    if world_size > 1:
        torch.distributed.barrier()


MAX_DEFAULT_WORKERS = 8


def default_num_workers(device: torch.device) -> int:
    """DataLoader workers for decoding and transforms: this process's share of the cores it may run on, less the
    cores its own compute needs.

    On a GPU the device computes, so the workers get the share (up to :data:`MAX_DEFAULT_WORKERS`) to keep it fed.
    On a CPU the backbone's intra-op threads (``torch.get_num_threads()``) are the compute: a worker on one of their
    cores time-shares it, and every parallel matrix product then waits for its descheduled thread, so workers get
    only the cores those threads leave idle. With none left, the main process decodes between batches: a few
    milliseconds an image, against hundreds for a ViT-B/16 forward on a CPU core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    share = max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if device.type == "cpu":
        share -= torch.get_num_threads()
    return max(0, min(MAX_DEFAULT_WORKERS, share))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _listed_records(directory: Path, key_dict: dict, num_rows: int) -> dict[int, dict]:
    """Every shard some rank (or an earlier manifest) lists for this key, by shard index."""
    records = {}
    shard_size = None
    for path in [directory / MANIFEST_NAME, *sorted(directory.glob(RANK_RECORDS_GLOB))]:
        listing = _read_json(path)
        if listing.get("key") != key_dict or listing.get("num_rows") != num_rows:
            continue  # another extraction's leftovers under this name
        shard_size = shard_size or listing["shard_size"]
        if listing["shard_size"] != shard_size:
            continue
        for record in listing.get("shards", []):
            records[record["start"] // listing["shard_size"]] = {**record, "shard_size": listing["shard_size"]}
    return records


def _remove_files_of_shard(directory: Path, index: int) -> None:
    name = SHARD_PATTERN.format(index)
    (directory / name).unlink(missing_ok=True)
    for leftover in directory.glob(f".{name}.tmp-*"):
        leftover.unlink(missing_ok=True)


def check_free_space(directory: Path, needed_bytes: int) -> None:
    """Stop before extracting when the cache will not fit on its disk."""
    free = shutil.disk_usage(directory).free
    if needed_bytes > free:
        raise OSError(
            f"The token cache needs {needed_bytes / 1e9:.2f} GB more, but {directory} has {free / 1e9:.2f} GB free. "
            "Free disk space, choose another --token_cache_dir (or HF_PROBING_TOKEN_CACHE), store float16 instead of "
            "float32, or cache fewer layers (python -m hf_efficient_probing.cache.plan estimates each choice)."
        )


class ShardWriter:
    """Writes one rank's shards in a background thread while the next batches compute.

    A shard becomes durable exactly as before: written to a temporary file, fsynced, renamed into place, and only then
    listed in this rank's record file (itself replaced atomically). At most one shard waits to be written, so memory
    holds at most two shards' tokens."""

    def __init__(self, directory: Path, rank: int, listing: dict):
        self.directory, self.path, self.listing = directory, directory / RANK_RECORDS_PATTERN.format(rank), listing
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="token-cache-writer")
        self.pending = None
        self.save_listing()

    def save_listing(self) -> None:
        atomic_write_bytes(self.path, json.dumps(self.listing, indent=1).encode())

    def submit(self, index: int, start: int, tokens: torch.Tensor, labels: torch.Tensor, layout: dict) -> None:
        self.wait()
        self.pending = self.pool.submit(self._write, index, start, tokens, labels, layout)

    def _write(self, index: int, start: int, tokens: torch.Tensor, labels: torch.Tensor, layout: dict) -> None:
        data = save_safetensors({"tokens": tokens.contiguous(), "labels": labels})
        name = SHARD_PATTERN.format(index)
        atomic_write_bytes(self.directory / name, data)
        record = ShardRecord(name, start, len(labels), len(data), hashlib.sha256(data).hexdigest())
        self.listing["shards"].append(record.__dict__)
        self.listing.update(layout)
        self.save_listing()

    def wait(self) -> None:
        if self.pending is not None:
            self.pending.result()  # re-raises a failed write here, in the extracting thread
            self.pending = None

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.pool.shutdown(wait=True)


def extract_tokens(
    backbone: nn.Module,
    reader: TokenReader,
    dataset: Dataset,
    key: TokenCacheKey,
    cache_root: str | os.PathLike | None = None,
    *,
    batch_size: int = 32,
    shard_size: int = 256,
    num_workers: int | None = None,
    image_key: str = "pixel_values",
    label_key: str = "labels",
    progress: bool = True,
    device: torch.device | str | None = None,
    poll_seconds: float = 0.5,
) -> TokenCache:
    """Run the frozen backbone once over ``dataset`` and store its tokens in ``<cache_root>/<key.fingerprint>``.

    Call it on every process of a distributed run (``accelerate launch``, several nodes on a shared file system):
    rank ``r`` of ``W`` extracts shards ``r, r + W, ...`` into the same directory and lists them in its own record
    file; once every shard is listed, the main process verifies the sizes and writes the one manifest, and every
    rank returns the same complete cache. A complete cache with the same key is reused as is. After a kill, each
    rank keeps the shards that verify (size and SHA-256), deletes the rest and extracts them again, whichever
    number of processes the rerun has. The backbone runs under ``torch.inference_mode`` and, when
    ``key.compute_dtype`` is bfloat16, under bfloat16 autocast. ``dataset`` yields dicts with ``image_key`` (a
    preprocessed ``[3, H, W]`` tensor) and ``label_key`` (an int), in a fixed order.

    The returned cache carries ``extraction_report``: ``images`` extracted by this run (all ranks), ``seconds`` (the
    slowest rank's, without its wait for the other ranks to start), ``images_per_second`` (all ranks together),
    ``compute_dtype``, ``storage_dtype``, ``processes`` and ``reused``.

    Args:
        backbone: the frozen backbone (run in eval mode, without gradients).
        reader: the :class:`~hf_efficient_probing.backbones.TokenReader` deciding layers, tokens and final norm.
        key: the cache key (:meth:`TokenCacheKey.from_reader`); its layers and dtypes are what is computed and stored.
        cache_root: where caches live; by default :func:`~hf_efficient_probing.cache.location.default_cache_root`.
        shard_size: rows per shard: the unit of resumption, and of what a kill can cost.
        num_workers: DataLoader workers decoding and transforming images (default: :func:`default_num_workers`, the
            cores of this process that its compute leaves idle; none on a CPU whose cores the backbone's threads use).
        device: where the backbone runs (its own device by default); it is moved there for the extraction and back
            after it, so a model built on the CPU extracts on this rank's GPU.
    """
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be positive, got {shard_size} and {batch_size}.")
    if tuple(normalize_layers(reader.feature_layers, reader.num_hidden_layers)) != tuple(key.feature_layers):
        raise ValueError(f"The reader reads layers {reader.feature_layers}, the key says {list(key.feature_layers)}.")
    directory = Path(cache_root if cache_root is not None else default_cache_root()) / key.fingerprint
    manifest_path = directory / MANIFEST_NAME
    key_dict = json.loads(json.dumps(key.to_dict()))  # as the manifest stores it (tuples become lists)
    num_rows = len(dataset)
    rank, world_size = process_slot()
    report = {"compute_dtype": key.compute_dtype, "storage_dtype": key.dtype, "processes": world_size}
    if _complete_manifest(manifest_path, key_dict):
        reused = {"images": 0, "seconds": 0.0, "images_per_second": None, "reused": True}
        return _with_report(TokenCache(directory), {**report, **reused})
    if num_rows == 0:
        raise ValueError("Cannot cache an empty data set split.")

    directory.mkdir(parents=True, exist_ok=True)
    dtype = storage_dtype(key.dtype)
    home = next(backbone.parameters()).device
    device = torch.device(device) if device is not None else home
    started = time.perf_counter()
    with exclusive_lock(directory, rank):
        listed = _listed_records(directory, key_dict, num_rows)
        if listed:
            shard_size = next(iter(listed.values()))["shard_size"]  # resume with the layout on disk
        else:
            shard_size = min(shard_size, -(-num_rows // world_size))  # a shard for every rank, even on small data
        num_shards = -(-num_rows // shard_size)
        mine = range(rank, num_shards, world_size)
        trusted = {index: listed[index] for index in mine if index in listed and _verifies(directory, listed[index])}
        todo = [index for index in mine if index not in trusted]
        for index in todo:
            _remove_files_of_shard(directory, index)
        layout = {k: v for k, v in next(iter(trusted.values()), {}).items() if k in _LAYOUT_FIELDS}
        listing = {"key": key_dict, "num_rows": num_rows, "shard_size": shard_size, **layout}
        listing["shards"] = [ShardRecord(**_shard_fields(trusted[i])).__dict__ for i in sorted(trusted)]
        writer = ShardWriter(directory, rank, listing)
        missing_rows = sum(min(shard_size, num_rows - i * shard_size) for i in range(num_shards) if i not in listed)
        arrived = time.perf_counter()
        _wait_for_everyone(world_size)  # every record file is this run's before the main process reads them
        started += time.perf_counter() - arrived  # waiting for the other ranks to start up is not extraction
        try:
            backbone.to(device)
            extracted = _extract_shards(
                backbone, reader, dataset, todo, shard_size, num_rows, writer, dtype, key.compute_dtype, device,
                batch_size=batch_size,
                num_workers=default_num_workers(device) if num_workers is None else num_workers,
                collate=collate_images(image_key, label_key),
                missing_rows=missing_rows,
                progress=progress and rank == 0,
            )  # fmt: skip
        finally:
            writer.close()
            backbone.to(home)
        seconds = time.perf_counter() - started
        writer.listing["run"] = {"images": extracted, "seconds": seconds}
        writer.save_listing()
        if rank == 0:
            _merge_manifest(directory, key_dict, num_rows, shard_size, num_shards, world_size, poll_seconds)
    while not _complete_manifest(manifest_path, key_dict):
        time.sleep(poll_seconds)  # the main process merges once every rank has listed its shards
    cache = TokenCache(directory)
    return _with_report(cache, {**report, **cache.manifest["extraction"], "reused": False})


_LAYOUT_FIELDS = ("hidden_size", "num_hidden_layers", "num_prefix_tokens", "grid_size", "token_shape")


def _shard_fields(record: dict) -> dict:
    return {name: record[name] for name in ("file", "start", "rows", "bytes", "sha256")}


def _verifies(directory: Path, record: dict) -> bool:
    try:
        check_shard(directory, ShardRecord(**_shard_fields(record)))
    except CorruptCacheError:
        return False
    return True


def _complete_manifest(manifest_path: Path, key_dict: dict) -> bool:
    manifest = _read_json(manifest_path)
    return bool(manifest.get("complete")) and manifest.get("key") == key_dict


def _with_report(cache: TokenCache, report: dict) -> TokenCache:
    cache.extraction_report = report
    return cache


def _extract_shards(
    backbone, reader, dataset, shards, shard_size, num_rows, writer, dtype, compute_dtype, device, *, batch_size,
    num_workers, collate, missing_rows, progress,
) -> int:  # fmt: skip
    """Extract ``shards`` (indices) with one DataLoader over all their rows; returns the rows extracted."""
    bounds = {index: range(index * shard_size, min((index + 1) * shard_size, num_rows)) for index in shards}
    batches = [list(rows[i : i + batch_size]) for rows in bounds.values() for i in range(0, len(rows), batch_size)]
    if not batches:
        return 0
    cuda = device.type == "cuda"
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=collate, pin_memory=cuda)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=compute_dtype == "bfloat16")
    backbone_mode = backbone.training
    backbone.eval()
    bar = tqdm(total=sum(map(len, bounds.values())), unit="img", desc="Caching tokens", disable=not progress)
    order = iter(bounds.items())
    index, rows = next(order)
    token_batches, label_batches, filled = [], [], 0
    token_shape, token_shape_on_disk = None, writer.listing.get("token_shape")
    try:
        with torch.inference_mode():
            for pixel_values, labels in loader:
                with autocast:  # the backbone only: concatenating stored tokens must not be autocast
                    read = reader(backbone, pixel_values.to(device, non_blocking=cuda))
                token_batches.append(read.tokens.to("cpu", dtype))
                if token_shape is None:  # the first batch of this run: will the rest fit?
                    check_free_space(writer.directory, missing_rows * token_batches[0][0].nbytes)
                    token_shape = token_shape_on_disk or list(read.tokens.shape[1:])
                label_batches.append(labels)
                filled += len(labels)
                bar.update(len(labels))
                if filled < len(rows):
                    continue
                tokens = torch.cat(token_batches)
                if list(tokens.shape[1:]) != token_shape:
                    raise ValueError(
                        f"Rows {rows[0]}-{rows[-1]} give tokens of shape {list(tokens.shape[1:])}, earlier rows "
                        f"{token_shape}: every image must reach the backbone at the same size (use the "
                        "deterministic eval transform, which resizes and crops)."
                    )
                layout = dict(
                    hidden_size=tokens.shape[-1] // len(reader.feature_layers),  # the tokens' width per layer
                    num_hidden_layers=reader.num_hidden_layers,
                    num_prefix_tokens=read.num_prefix_tokens,
                    grid_size=list(read.grid_size) if read.grid_size else None,
                    token_shape=list(tokens.shape[1:]),
                )
                writer.submit(index, rows[0], tokens, torch.cat(label_batches), layout)
                token_batches, label_batches, filled = [], [], 0
                index, rows = next(order, (None, None))
    finally:
        bar.close()
        backbone.train(backbone_mode)
    return sum(map(len, bounds.values()))


def _merge_manifest(directory, key_dict, num_rows, shard_size, num_shards, world_size, poll_seconds) -> None:
    """The main process: wait until every rank has finished, check that every shard is listed and on disk, write the
    one manifest and remove the ranks' record files."""
    while True:
        listings = [_read_json(directory / RANK_RECORDS_PATTERN.format(rank)) for rank in range(world_size)]
        if all("run" in listing for listing in listings):
            break
        time.sleep(poll_seconds)
    listed = _listed_records(directory, key_dict, num_rows)
    if len(listed) != num_shards:
        raise RuntimeError(f"Shards {sorted(set(range(num_shards)) - set(listed))} were not written; run it again.")
    runs = [listing["run"] for listing in listings]
    images = sum(run["images"] for run in runs)
    seconds = max(run["seconds"] for run in runs)
    records = [_shard_fields(listed[index]) for index in range(num_shards)]
    for record in records:
        check_shard_size(directory, ShardRecord(**record))
    layout = next(
        {k: listing[k] for k in _LAYOUT_FIELDS}
        for listing in map(_read_json, [directory / MANIFEST_NAME, *directory.glob(RANK_RECORDS_GLOB)])
        if all(k in listing for k in _LAYOUT_FIELDS) and listing.get("key") == key_dict
    )
    manifest = {
        "key": key_dict, "num_rows": num_rows, "shard_size": shard_size, **layout, "shards": records,
        "complete": True,
        "extraction": {"images": images, "seconds": round(seconds, 3),
                       "images_per_second": round(images / seconds, 2) if seconds and images else None,
                       "images_per_process": [run["images"] for run in runs]},
    }  # fmt: skip
    atomic_write_bytes(directory / MANIFEST_NAME, json.dumps(manifest, indent=1).encode())
    keep = {record["file"] for record in records} | {MANIFEST_NAME}
    for path in directory.iterdir():
        leftover = path.match(RANK_RECORDS_GLOB) or (path.name.startswith(".") and ".tmp-" in path.name)
        if leftover or (path.suffix == ".safetensors" and path.name not in keep):
            path.unlink(missing_ok=True)


def cache_tokens_for_model(
    model,
    dataset: Dataset,
    cache_root: str | os.PathLike | None = None,
    *,
    preprocessing: str,
    split: str,
    dataset_fingerprint: str | None = None,
    dtype: str | torch.dtype = "float16",
    compute_dtype: str = "auto",
    feature_layers=None,
    token_selection: str | None = None,
    device: torch.device | str | None = None,
    **kwargs,
) -> TokenCache:
    """:func:`extract_tokens` for a probing model: its backbone, its token reader (or other layers/tokens of the same
    backbone) and the backbone id/revision its config names. Call it on every process of a distributed run."""
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
        compute_dtype=compute_dtype,
        device=device,
        backbone_name_or_path=config.backbone_name_or_path,
        backbone_revision=config.backbone_revision,
    )
    return extract_tokens(model.backbone, reader, dataset, key, cache_root, device=device, **kwargs)


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
