"""Filling a token cache: the frozen backbone runs once over a data set split, on every process, resumably.

One :class:`ExtractionPlan` says what to extract (backbone, token reader, data set, key) and how
(:class:`ExtractionOptions`: where, batch and shard sizes, workers, device, waits). :func:`extract_tokens` runs it on
every rank of a distributed run: rank ``r`` of ``W`` extracts shards ``r, r + W, ...`` into the same directory and
lists them in its own record file; once every rank has finished, the main process checks the shards and writes the
one manifest. A shard becomes durable exactly when it is listed: written to a temporary file, fsynced, renamed into
place, then recorded. A run killed at any point leaves either a listed, verified shard or nothing that is trusted, and
a rerun (with any number of processes) keeps every shard that verifies and extracts the rest. A complete cache is
reused only after every shard it serves is re-hashed against its record.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import filelock
import torch
from safetensors.torch import save as save_safetensors
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..atomic import atomic_write_bytes
from ..backbones import TokenReader, has_cls_token
from .dataset import TokenCache, TokenCacheView, shard_tensor_name
from .groups import complete_layer_groups, cover_layers
from .key import CachedSplit, TokenCacheKey
from .location import default_cache_root
from .manifest import (
    LAYOUT_FIELDS,
    MANIFEST_NAME,
    RANK_RECORDS_GLOB,
    RANK_RECORDS_PATTERN,
    SHARD_PATTERN,
    CorruptCacheError,
    ShardRecord,
    check_shard_size,
    is_complete,
    listed_layout,
    listed_records,
    read_json,
    record_of,
    shard_verifies,
    unseen_rank_records,
    write_json,
)
from .quantization import encode
from .ranks import (
    SHARED_ROOT_ADVICE,
    CacheRootNotSharedError,
    default_rank_timeout,
    gather_from_everyone,
    process_slot,
    wait_for_everyone,
)

LOCK_PATTERN = ".lock-rank{:03d}"
MAX_DEFAULT_WORKERS = 8


@dataclass
class ExtractionOptions:
    """How an extraction runs.

    Attributes:
        cache_root: where caches live (default: `cache.location.default_cache_root`).
        batch_size: images per backbone forward.
        shard_size: rows per shard: the unit of resumption, and of what a kill can cost.
        num_workers: DataLoader workers decoding and transforming images (default: :func:`default_num_workers`).
        device: where the backbone runs (its own device by default); it is moved there and back.
        progress: show a progress bar (on the main process).
        image_key, label_key: the keys of the data set's items.
        poll_seconds: how often a rank looks for the others' files while it waits for them.
        timeout_seconds: the longest a rank waits for another one before failing with the rank it waited for
            (default: `cache.ranks.default_rank_timeout`, ``$HF_PROBING_RANK_TIMEOUT`` or 30 minutes).
        cache_per_node: each node's processes extract the whole set into ``cache_root`` on that node, for its own
            ranks (a node-local disk); without it every process of the run shares one cache, so ``cache_root`` must
            be a file system every node sees.
    """

    cache_root: str | os.PathLike | None = None
    batch_size: int = 32
    shard_size: int = 256
    num_workers: int | None = None
    device: torch.device | str | None = None
    progress: bool = True
    image_key: str = "pixel_values"
    label_key: str = "labels"
    poll_seconds: float = 0.5
    timeout_seconds: float = field(default_factory=default_rank_timeout)
    cache_per_node: bool = False


@dataclass
class ExtractionPlan:
    """What one extraction computes: ``reader``'s tokens of ``backbone`` over ``dataset`` (items with a
    preprocessed ``[3, H, W]`` image and an int label or a multi-hot vector, in a fixed order), stored under ``key``."""

    backbone: nn.Module
    reader: TokenReader
    dataset: Dataset
    key: TokenCacheKey
    options: ExtractionOptions = field(default_factory=ExtractionOptions)

    @property
    def directory(self) -> Path:
        root = self.options.cache_root if self.options.cache_root is not None else default_cache_root()
        return Path(root) / self.key.fingerprint

    @property
    def key_dict(self) -> dict:
        return json.loads(json.dumps(self.key.to_dict()))  # as the manifest stores it (tuples become lists)


# ----------------------------------------------------------------------------------------------------------------
# Processes


def wait_until(done: Callable[[], bool], options: ExtractionOptions, waiting_for: Callable[[], str]) -> None:
    """Poll ``done`` until it holds; after ``options.timeout_seconds`` fail, saying what was waited for."""
    deadline = time.monotonic() + options.timeout_seconds
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"Waited {options.timeout_seconds:.0f} s for {waiting_for()}. If that process died, run the same "
                f"command again (it resumes). On several nodes: {SHARED_ROOT_ADVICE}."
            )
        time.sleep(options.poll_seconds)


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


@contextmanager
def exclusive_lock(directory: Path, rank: int = 0) -> Iterator[None]:
    """One extraction per cache directory and rank at a time: a second one fails at once instead of interleaving
    shards. ``filelock`` works on every platform."""
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


def check_free_space(directory: Path, needed_bytes: int) -> None:
    """Stop before extracting when the cache will not fit on its disk."""
    free = shutil.disk_usage(directory).free
    if needed_bytes > free:
        raise OSError(
            f"The token cache needs {needed_bytes / 1e9:.2f} GB more, but {directory} has {free / 1e9:.2f} GB free. "
            "Free disk space, choose another --token_cache_dir (or HF_PROBING_TOKEN_CACHE), store float16 instead of "
            "float32, or cache fewer layers (python -m hf_efficient_probing.cache.plan estimates each choice)."
        )


# ----------------------------------------------------------------------------------------------------------------
# Writing shards


class ShardWriter:
    """Writes one rank's shards in a background thread while the next batches compute.

    A shard is written to a temporary file, fsynced, renamed into place, and only then listed in this rank's record
    file (itself replaced atomically). At most one shard waits to be written, so memory holds at most two shards'
    tokens. ``shard_pattern`` names shard ``index``'s file (a stream's are named by rank, `cache.streaming`)."""

    def __init__(self, directory: Path, rank: int, listing: dict, shard_pattern: str = SHARD_PATTERN):
        self.directory, self.path, self.listing = directory, directory / RANK_RECORDS_PATTERN.format(rank), listing
        self.shard_pattern = shard_pattern
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="token-cache-writer")
        self.pending = None
        self.save_listing()

    def save_listing(self) -> None:
        write_json(self.path, self.listing)

    def submit(self, index: int, start: int, tensors: dict[str, torch.Tensor], layout: dict) -> None:
        """Write shard ``index`` (rows from ``start``): ``tensors`` by name, ``"labels"`` among them."""
        self.wait()
        self.pending = self.pool.submit(self._write, index, start, tensors, layout)

    def _write(self, index: int, start: int, tensors: dict[str, torch.Tensor], layout: dict) -> None:
        data = save_safetensors({name: tensor.contiguous() for name, tensor in tensors.items()})
        name = self.shard_pattern.format(index)
        atomic_write_bytes(self.directory / name, data)
        self.listing["shards"].append(record_of(name, start, data, len(tensors["labels"])))
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


# ----------------------------------------------------------------------------------------------------------------
# The extraction


def extract_tokens(plan: ExtractionPlan, on_rank: Callable | None = None) -> TokenCache:
    """Run the frozen backbone once over ``plan.dataset`` and store its tokens in ``plan.directory``; call it on
    every process of a distributed run (``accelerate launch``, several nodes on a shared file system).

    Every token of ``plan.key``'s layers is stored ([CLS] + patches where the backbone has a [CLS] token, whatever
    ``plan.reader`` selects), so that any reader of these layers is served from it. A complete cache with the same key is reused once each rank has re-hashed its share of the shards (a shard that
    fails is extracted again). The backbone runs under ``torch.inference_mode`` and, when ``key.compute_dtype`` is
    bfloat16, under bfloat16 autocast. The returned cache carries ``extraction_report``: ``images`` extracted by
    this run (all ranks), ``seconds`` (the slowest rank's, without its wait for the other ranks to start),
    ``images_per_second`` (all ranks together), ``compute_dtype``, ``storage_dtype``, ``processes`` and ``reused``.
    ``on_rank(plan, rank, world_size)`` fills the directory on one rank (`cache.streaming` for a stream)."""
    options, key, reader = plan.options, plan.key, stored_reader(plan.reader)
    plan = replace(plan, reader=reader)
    if options.shard_size < 1 or options.batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be positive, got {options.shard_size}, {options.batch_size}.")
    if reader.layers != tuple(key.feature_layers):
        raise ValueError(f"The reader reads layers {list(reader.layers)}, the key says {list(key.feature_layers)}.")
    rank, world_size = process_slot(options.cache_per_node)
    report = {"compute_dtype": key.compute_dtype, "storage_dtype": key.dtype, "processes": world_size}
    if complete_on_every_rank(plan, world_size) and reuse_verified(plan, rank, world_size):
        reused = {"images": 0, "seconds": 0.0, "images_per_second": None, "reused": True}
        return _with_report(TokenCache(plan.directory), {**report, **reused})
    if len(plan.dataset) == 0:
        raise ValueError("Cannot cache an empty data set split.")
    plan.directory.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(plan.directory, rank):
        (on_rank or _extract_on_rank)(plan, rank, world_size)
    wait_until(
        lambda: is_complete(plan.directory, plan.key_dict),
        options,
        lambda: f"rank 0 (the main process of this cache) to write the manifest of {plan.directory}",
    )
    cache = TokenCache(plan.directory)
    return _with_report(cache, {**report, **cache.manifest["extraction"], "reused": False})


def complete_on_every_rank(plan: ExtractionPlan, world_size: int) -> bool:
    """Whether ``plan``'s cache is complete, as every rank sees it; ranks that disagree see different directories,
    so they fail here instead of waiting for each other at different steps."""
    options = plan.options
    complete = is_complete(plan.directory, plan.key_dict)
    wait_for_everyone(world_size, options.timeout_seconds, f"the start of {plan.directory}", options.cache_per_node)
    seen = gather_from_everyone(complete, world_size, options.cache_per_node)
    if len(set(seen)) > 1:
        raise CacheRootNotSharedError(
            f"Ranks {[r for r, c in enumerate(seen) if c]} see a complete token cache in {plan.directory}, ranks "
            f"{[r for r, c in enumerate(seen) if not c]} do not: {SHARED_ROOT_ADVICE}."
        )
    return complete


VISIBILITY_GRACE_SECONDS = 15.0  # a shared file system may show another node's new file late (NFS attribute caches)


def ranks_still_unseen(directory: Path, run_ids: list[str], grace_seconds: float, poll_seconds: float) -> list:
    """The ranks whose record file of this run ``directory`` still lacks after ``grace_seconds`` of looking again."""
    deadline = time.monotonic() + grace_seconds
    while (unseen := unseen_rank_records(directory, run_ids)) and time.monotonic() < deadline:
        time.sleep(poll_seconds)
    return unseen


def check_ranks_see_each_other(plan: ExtractionPlan, rank: int, world_size: int, run_id: str) -> None:
    """Fail at the start, not at the merge's timeout, when this rank cannot see the record file another rank of this
    run wrote (``run_id`` is this rank's, in its record file): the ranks do not share the cache root."""
    options = plan.options
    wait_for_everyone(world_size, options.timeout_seconds, "the start of the extraction", options.cache_per_node)
    run_ids = gather_from_everyone(run_id, world_size, options.cache_per_node)
    grace = min(VISIBILITY_GRACE_SECONDS, options.timeout_seconds)
    unseen = ranks_still_unseen(plan.directory, run_ids, grace, options.poll_seconds)
    if unseen:
        raise CacheRootNotSharedError(
            f"Rank {rank} cannot see the shards of ranks {unseen} in {plan.directory} (their "
            f"{RANK_RECORDS_PATTERN.format(unseen[0])} is missing or another run's): {SHARED_ROOT_ADVICE}."
        )


def reuse_verified(plan: ExtractionPlan, rank: int, world_size: int) -> bool:
    """Re-hash this rank's share of a complete cache's shards, deleting any that fails; ``True`` when every shard of
    the cache (all ranks' shares) still verifies, so the cache is reused as it is. Otherwise the main process marks
    the manifest incomplete and every rank goes on to re-extract what is missing."""
    directory = plan.directory
    shards = [ShardRecord(**record) for record in read_json(directory / MANIFEST_NAME)["shards"]]
    for shard in shards[rank::world_size]:
        if not shard_verifies(directory, shard):
            (directory / shard.file).unlink(missing_ok=True)
    timeout, per_node = plan.options.timeout_seconds, plan.options.cache_per_node
    wait_for_everyone(world_size, timeout, f"the check of {directory}'s shards", per_node)
    intact = all((directory / shard.file).is_file() for shard in shards)
    if not intact and rank == 0:
        manifest = read_json(directory / MANIFEST_NAME)
        write_json(directory / MANIFEST_NAME, {**manifest, "complete": False})
    wait_for_everyone(world_size, timeout, f"the check of {directory}'s shards", per_node)
    return intact


def _extract_on_rank(plan: ExtractionPlan, rank: int, world_size: int) -> None:
    """This rank's shards: keep the listed ones that verify, extract the others, then (main process) the manifest."""
    options, directory, key_dict, num_rows = plan.options, plan.directory, plan.key_dict, len(plan.dataset)
    started = time.perf_counter()
    listed = listed_records(directory, key_dict, num_rows)
    # resume with the layout on disk; else a shard for every rank, even on small data
    shard_size = (
        next(iter(listed.values()))["shard_size"] if listed else min(options.shard_size, -(-num_rows // world_size))
    )
    num_shards = -(-num_rows // shard_size)
    mine = range(rank, num_shards, world_size)
    trusted = {
        i: listed[i] for i in mine if i in listed and shard_verifies(directory, ShardRecord.from_listing(listed[i]))
    }
    todo = [index for index in mine if index not in trusted]
    for index in todo:
        _remove_files_of_shard(directory, index)
    layout = {k: v for k, v in next(iter(trusted.values()), {}).items() if k in LAYOUT_FIELDS}
    listing = {"key": key_dict, "num_rows": num_rows, "shard_size": shard_size, "run_id": uuid.uuid4().hex, **layout}
    listing["shards"] = [ShardRecord.from_listing(trusted[i]).__dict__ for i in sorted(trusted)]
    writer = ShardWriter(directory, rank, listing)
    missing_rows = sum(min(shard_size, num_rows - i * shard_size) for i in range(num_shards) if i not in listed)
    arrived = time.perf_counter()
    check_ranks_see_each_other(plan, rank, world_size, listing["run_id"])  # each record file is this run's now
    started += time.perf_counter() - arrived  # waiting for the other ranks to start up is not extraction
    try:
        extracted = _extract_shards(
            plan, writer, todo, shard_size, missing_rows, progress=options.progress and not rank
        )
    finally:
        writer.close()
    writer.listing["run"] = {"images": extracted, "seconds": time.perf_counter() - started}
    writer.save_listing()
    if rank == 0:
        merge_manifest(plan, shard_size, num_shards, world_size)


def _remove_files_of_shard(directory: Path, index: int) -> None:
    name = SHARD_PATTERN.format(index)
    (directory / name).unlink(missing_ok=True)
    for leftover in directory.glob(f".{name}.tmp-*"):
        leftover.unlink(missing_ok=True)


def _with_report(cache: TokenCache, report: dict) -> TokenCache:
    cache.extraction_report = report
    return cache


def collate_images(image_key: str, label_key: str):
    """Batches of images and their labels: class indices (int64), or multi-label multi-hot vectors (float32)."""

    def collate(rows):
        pixel_values = torch.stack([torch.as_tensor(row[image_key]) for row in rows])
        labels = [torch.as_tensor(row[label_key]) for row in rows]
        if labels[0].ndim:
            return pixel_values, torch.stack(labels).to(torch.float32)
        return pixel_values, torch.tensor([int(label) for label in labels], dtype=torch.int64)

    return collate


def _shard_batches(shards: list[int], shard_size: int, num_rows: int, batch_size: int) -> dict[int, list[list[int]]]:
    """The batches of row indices of each shard to extract (a shard's last batch may be short)."""
    bounds = {index: range(index * shard_size, min((index + 1) * shard_size, num_rows)) for index in shards}
    return {
        index: [list(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
        for index, rows in bounds.items()
    }


def _extract_shards(plan: ExtractionPlan, writer: ShardWriter, shards, shard_size, missing_rows, progress) -> int:
    """Extract ``shards`` (indices) with one DataLoader over all their rows, handing each full shard to the writer;
    returns the rows extracted."""
    options = plan.options
    per_shard = _shard_batches(shards, shard_size, len(plan.dataset), options.batch_size)
    batches = [batch for shard_batches in per_shard.values() for batch in shard_batches]
    if not batches:
        return 0
    device = extraction_device(plan)
    num_workers = default_num_workers(device) if options.num_workers is None else options.num_workers
    loader = DataLoader(
        plan.dataset,
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=collate_images(options.image_key, options.label_key),
        pin_memory=device.type == "cuda",
    )
    run_backbone(plan, writer, iter(loader), per_shard, missing_rows, progress)
    return sum(map(len, batches))


def extraction_device(plan: ExtractionPlan) -> torch.device:
    """Where the backbone runs: ``options.device``, else its own device."""
    home = next(plan.backbone.parameters()).device
    return torch.device(plan.options.device) if plan.options.device is not None else home


def run_backbone(plan: ExtractionPlan, writer: ShardWriter, loader, per_shard, missing_rows: int, progress) -> None:
    """The backbone on its extraction device, in eval mode, over ``loader``'s ``(pixel_values, labels)`` batches
    (those of ``per_shard``, shard by shard, :func:`_fill_shards`); moved back and restored after."""
    backbone, device = plan.backbone, extraction_device(plan)
    home, backbone_mode = next(backbone.parameters()).device, backbone.training
    backbone.to(device).eval()
    total = sum(len(batch) for batches in per_shard.values() for batch in batches)
    unit = "clip" if plan.reader.reads_clips else "img"
    bar = tqdm(total=total, unit=unit, desc="Caching tokens", disable=not progress)
    try:
        with torch.inference_mode():
            _fill_shards(plan, writer, loader, per_shard, device, missing_rows, bar)
    finally:
        bar.close()
        backbone.to(home).train(backbone_mode)


def stored_reader(reader: TokenReader) -> TokenReader:
    """The reader of what a cache of ``reader``'s layers stores: every token any reader of them can ask for."""
    return reader.reading(token_selection="all" if has_cls_token(reader.config) else "patch")


def _fill_shards(plan, writer, loader, per_shard, device, missing_rows, bar) -> None:
    """Run the backbone batch by batch and submit each shard once its rows are in: one tensor per layer (and the
    8-bit types' per-token parameters), encoded on the device before they travel to the host."""
    autocast = plan.key.compute_dtype == "bfloat16"
    expected_shape = writer.listing.get("token_shape")
    for index, shard_batches in per_shard.items():
        parts, label_batches = {}, []
        for _ in shard_batches:
            pixel_values, labels = next(loader)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):  # the backbone only
                read = plan.reader(plan.backbone, pixel_values.to(device, non_blocking=device.type == "cuda"))
            for name, tensor in encode_layers(
                read.tokens, plan.reader.layers, plan.key.dtype, read.num_prefix_tokens
            ).items():
                parts.setdefault(name, []).append(tensor.to("cpu"))
            label_batches.append(labels)
            if expected_shape is None:  # the first batch of this run: will the rest fit?
                check_free_space(writer.directory, missing_rows * sum(part[0][0].nbytes for part in parts.values()))
                expected_shape = list(read.tokens.shape[1:])
            bar.update(len(labels))
        start, shape = shard_batches[0][0], list(read.tokens.shape[1:])
        if shape != expected_shape:
            raise ValueError(
                f"Rows from {start} give tokens of shape {shape}, earlier rows {expected_shape}: every image must "
                "reach the backbone at the same size (use the deterministic eval transform, which resizes and crops)."
            )
        layout = dict(
            hidden_size=shape[-1] // len(plan.reader.layers),  # the tokens' width per layer
            num_hidden_layers=plan.reader.num_hidden_layers,
            num_prefix_tokens=read.num_prefix_tokens,
            grid_size=list(read.grid_size) if read.grid_size else None,
            token_shape=shape,
        )
        tensors = {name: torch.cat(batches) for name, batches in parts.items()}
        writer.submit(index, start, {**tensors, "labels": torch.cat(label_batches)}, layout)


def encode_layers(tokens: torch.Tensor, layers, token_dtype: str, num_prefix: int) -> dict[str, torch.Tensor]:
    """``[B, N, len(layers) * C]`` tokens, the first ``num_prefix`` of them prefix tokens, as the shard's tensors:
    each layer's, in ``token_dtype``."""
    per_layer = tokens.unflatten(-1, (len(layers), -1)).unbind(-2)
    return {
        shard_tensor_name(part, layer): tensor
        for layer, layer_tokens in zip(layers, per_layer, strict=True)
        for part, tensor in encode(layer_tokens, token_dtype, num_prefix).items()
    }


def merge_manifest(plan: ExtractionPlan, shard_size: int, num_shards: int, world_size: int) -> None:
    """The main process: wait until every rank has finished, check that every shard is listed and on disk, write the
    one manifest and remove the ranks' record files."""
    directory, key_dict = plan.directory, plan.key_dict

    def unfinished() -> list[int]:
        listings = [read_json(directory / RANK_RECORDS_PATTERN.format(rank)) for rank in range(world_size)]
        return [rank for rank, listing in enumerate(listings) if "run" not in listing]

    wait_until(lambda: not unfinished(), plan.options, lambda: f"ranks {unfinished()} to finish their shards")
    listed = listed_records(directory, key_dict, len(plan.dataset))
    if len(listed) != num_shards:
        missing = sorted(set(range(num_shards)) - set(listed))
        raise CorruptCacheError(f"Shards {missing} were not written; run the same command again.")
    runs = [read_json(directory / RANK_RECORDS_PATTERN.format(rank))["run"] for rank in range(world_size)]
    records = [ShardRecord.from_listing(listed[index]) for index in range(num_shards)]
    for record in records:
        check_shard_size(directory, record)
    write_complete_manifest(plan, records, runs, shard_size)


def write_complete_manifest(plan: ExtractionPlan, records: list, runs: list[dict], shard_size: int, **extra) -> None:
    """The one manifest of a complete cache (its shards, their layout, each process's run; ``extra`` fields, e.g. a
    stream's parts), then the record files and stray shards removed."""
    directory, key_dict = plan.directory, plan.key_dict
    images, seconds = sum(run["images"] for run in runs), max(run["seconds"] for run in runs)
    manifest = {
        "key": key_dict,
        "num_rows": len(plan.dataset),
        "shard_size": shard_size,
        **listed_layout(directory, key_dict),
        "shards": [record.__dict__ for record in records],
        "complete": True,
        **extra,
        "extraction": {
            "images": images,
            "seconds": round(seconds, 3),
            "images_per_second": round(images / seconds, 2) if seconds and images else None,
            "images_per_process": [run["images"] for run in runs],
        },
    }
    write_json(directory / MANIFEST_NAME, manifest)
    _remove_leftovers(directory, {record.file for record in records} | {MANIFEST_NAME})


def _remove_leftovers(directory: Path, keep: set[str]) -> None:
    for path in directory.iterdir():
        leftover = path.match(RANK_RECORDS_GLOB) or (path.name.startswith(".") and ".tmp-" in path.name)
        if leftover or (path.suffix == ".safetensors" and path.name not in keep):
            path.unlink(missing_ok=True)


def extract_for_reader(plan: ExtractionPlan, extract: Callable = extract_tokens) -> TokenCacheView:
    """The tokens ``plan.reader`` reads (its layers and token selection) from the layer groups of ``plan.key``'s
    source: complete groups that hold some of its layers are reused (fewest groups first), and the layers none holds
    are extracted together, in one backbone pass, as a new group (by ``extract``: :func:`extract_tokens`, or
    `cache.streaming.extract_stream` for a stream). Call it on every process of a distributed run."""
    reader = plan.reader
    groups = complete_layer_groups(plan.directory.parent, plan.key)
    reused, missing = cover_layers(reader.layers, groups)
    group_layers = [*reused, *([missing] if missing else [])]
    caches = [
        extract(replace(plan, key=plan.key.with_layers(layers), reader=reader.reading(list(layers))))
        for layers in group_layers
    ]
    report = combined_report([cache.extraction_report for cache in caches])
    return TokenCacheView(caches, reader.layers, reader.token_selection, report)


def combined_report(reports: list[dict]) -> dict:
    """One extraction report for several caches (the layer groups a reader was served from, or a run's splits; see
    :func:`extract_tokens`), with the number of ``layer_groups`` read."""
    images, seconds = sum(r["images"] for r in reports), sum(r["seconds"] for r in reports)
    return {
        **reports[0],
        "images": images,
        "seconds": round(seconds, 3),
        "images_per_second": round(images / seconds, 2) if images and seconds else None,
        "reused": all(r["reused"] for r in reports),
        "layer_groups": sum(r.get("layer_groups", 1) for r in reports),
    }


def cache_tokens_for_model(
    model,
    dataset: Dataset,
    split: CachedSplit,
    options: ExtractionOptions | None = None,
    storage: tuple[str, str] = ("float16", "auto"),
    reader: TokenReader | None = None,
    extract: Callable = extract_tokens,
) -> TokenCacheView:
    """:func:`extract_for_reader` for a probing model: its backbone, the backbone id/revision its config names, and
    its token reader (or ``reader``, other layers or tokens of the same backbone). ``storage`` is the ``(storage
    dtype, compute dtype)`` pair; ``extract`` runs each missing group's plan. Call it on every process of a
    distributed run."""
    options = options or ExtractionOptions()
    config, reader = model.config, reader or model.token_reader
    key = TokenCacheKey.from_reader(
        model.backbone,
        reader,
        split,
        dtype=storage[0],
        compute_dtype=storage[1],
        device=options.device,
        backbone_name=(config.backbone_name_or_path, config.backbone_revision),
    )
    return extract_for_reader(ExtractionPlan(model.backbone, reader, dataset, key, options), extract)
