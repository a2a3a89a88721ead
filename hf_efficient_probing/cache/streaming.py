"""Filling a token cache from a stream: every process extracts its own part as it reads it, resumably.

A stream has no random access, so the layout of the shards differs from `cache.extraction`'s (whose rank ``r`` writes
shards ``r, r + W, ...`` of the whole split): process ``r`` writes its own part's rows in order, in shards
``shard-rank<r>-<k>.safetensors`` of ``shard_size`` rows (its last one short), with the same writer and the same
tensors (one per layer, the 8-bit types' parameters, the labels), each listed in its record file once durable. A rerun
with the same processes keeps the listed shards that verify, reads past their rows without decoding them, and
extracts the rest. Once every process has listed its whole part, the main process writes the one manifest: the parts
one after the other, in rank order. The directory is then an ordinary complete cache of the current format (a layer
group, `cache.groups`), reused, verified and read like any other.

The plan's data set is a stream of items (`training.streaming.StreamedImages`): ``len()`` its rows (all parts),
``part_rows(rank, world_size)`` the rows of process ``rank``'s part, ``part(rank, world_size, start)`` its items from
its ``start``-th on.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

from .dataset import TokenCache
from .extraction import (
    ExtractionPlan,
    ShardWriter,
    _shard_batches,
    check_ranks_see_each_other,
    collate_images,
    extract_tokens,
    run_backbone,
    wait_until,
    write_complete_manifest,
)
from .manifest import (
    LAYOUT_FIELDS,
    MANIFEST_NAME,
    RANK_RECORDS_PATTERN,
    CorruptCacheError,
    ShardRecord,
    check_shard_size,
    read_json,
    shard_verifies,
)

STREAM_SHARD_PATTERN = "shard-rank{rank:03d}-{{:05d}}.safetensors"


def extract_stream(plan: ExtractionPlan) -> TokenCache:
    """`cache.extraction.extract_tokens` of a stream: call it on every process; each extracts its own part."""
    return extract_tokens(plan, on_rank=_stream_on_rank)


def _part_listing(plan: ExtractionPlan, rank: int, world_size: int) -> dict:
    """What a rank's record file must say to be this extraction's: its key, processes, part and shard size."""
    rows = plan.dataset.part_rows(rank, world_size)
    return {"key": plan.key_dict, "processes": world_size, "part_rows": rows, "shard_size": plan.options.shard_size}


def _listed_part(plan: ExtractionPlan, rank: int, fresh: dict) -> dict:
    """This rank's record file if it is this extraction's; else this rank's shards in an earlier manifest of the same
    key and shard size (a complete cache one of whose shards failed its check), their first rows back in the part's
    own."""
    listing = read_json(plan.directory / RANK_RECORDS_PATTERN.format(rank))
    if all(listing.get(name) == value for name, value in fresh.items()):
        return listing
    manifest = read_json(plan.directory / MANIFEST_NAME)
    if manifest.get("key") != fresh["key"] or manifest.get("shard_size") != fresh["shard_size"]:
        return {}
    offset = sum(manifest["stream"]["rows_per_process"][:rank])  # the key fixes the parts (the data's fingerprint)
    mine = [record for record in manifest["shards"] if record["file"].startswith(f"shard-rank{rank:03d}-")]
    layout = {name: manifest[name] for name in LAYOUT_FIELDS}
    return {**fresh, **layout, "shards": [{**record, "start": record["start"] - offset} for record in mine]}


def _trusted_shards(plan: ExtractionPlan, rank: int, fresh: dict) -> tuple[list[dict], dict]:
    """The leading listed shards of this rank that verify (a part resumes after its last trusted shard: the ones
    after it are extracted again), and the layout listed with them; other files of this rank's are removed."""
    directory, listing = plan.directory, _listed_part(plan, rank, fresh)
    trusted = []
    for record in listing.get("shards", []):
        if not shard_verifies(directory, ShardRecord.from_listing(record)):
            break
        trusted.append(record)
    kept = {record["file"] for record in trusted}
    for path in directory.glob(f"shard-rank{rank:03d}-*"):
        if path.name not in kept:
            path.unlink(missing_ok=True)
    return trusted, {name: listing[name] for name in LAYOUT_FIELDS if name in listing and trusted}


def _stream_on_rank(plan: ExtractionPlan, rank: int, world_size: int) -> None:
    """This rank's part: keep its leading listed shards that verify, extract from there, then (main process) the
    manifest."""
    started = time.perf_counter()
    fresh = _part_listing(plan, rank, world_size)
    trusted, layout = _trusted_shards(plan, rank, fresh)
    pattern = STREAM_SHARD_PATTERN.format(rank=rank)
    run_id = uuid.uuid4().hex
    listing = {**fresh, **layout, "shards": trusted, "run_id": run_id}
    writer = ShardWriter(plan.directory, rank, listing, shard_pattern=pattern)
    arrived = time.perf_counter()
    check_ranks_see_each_other(plan, rank, world_size, run_id)  # each record file is this run's now
    started += time.perf_counter() - arrived
    try:
        extracted = _extract_part(plan, writer, rank, world_size, len(trusted))
    finally:
        writer.close()
    writer.listing["run"] = {"images": extracted, "seconds": time.perf_counter() - started}
    writer.save_listing()
    if rank == 0:
        merge_stream_manifest(plan, world_size)


def _extract_part(plan: ExtractionPlan, writer: ShardWriter, rank: int, world_size: int, done: int) -> int:
    """Run the backbone over this rank's items after its first ``done`` shards, one shard to the writer as each
    fills (`cache.extraction.run_backbone`); returns the rows extracted."""
    options, rows = plan.options, plan.dataset.part_rows(rank, world_size)
    shards = list(range(done, -(-rows // options.shard_size)))
    per_shard = _shard_batches(shards, options.shard_size, rows, options.batch_size)
    sizes = [len(batch) for batches in per_shard.values() for batch in batches]
    if not sizes:
        return 0
    items = plan.dataset.part(rank, world_size, done * options.shard_size)
    batches = _batches(items, sizes, collate_images(options.image_key, options.label_key), rank)
    run_backbone(plan, writer, batches, per_shard, sum(sizes), progress=options.progress and not rank)
    return sum(sizes)


def _batches(items, sizes: list[int], collate, rank: int):
    """``items`` collated into batches of ``sizes``; a stream that ends early changed since it was counted."""
    items = iter(items)
    for size in sizes:
        rows = [item for _, item in zip(range(size), items, strict=False)]
        if len(rows) < size:
            raise CorruptCacheError(
                f"The stream of rank {rank} ended before the rows it was counted with: the data set changed while it "
                "was read. Run the same command again."
            )
        yield collate(rows)


def merge_stream_manifest(plan: ExtractionPlan, world_size: int) -> None:
    """The main process: wait until every rank has listed its whole part, then write the one manifest (the parts in
    rank order, each shard's first row counted over all of them) and remove the record files."""
    directory = plan.directory
    fresh = [_part_listing(plan, rank, world_size) for rank in range(world_size)]

    def listings() -> list[dict]:
        return [read_json(directory / RANK_RECORDS_PATTERN.format(rank)) for rank in range(world_size)]

    def unfinished() -> list[int]:
        return [
            rank
            for rank, listing in enumerate(listings())
            if "run" not in listing or any(listing.get(name) != value for name, value in fresh[rank].items())
        ]

    wait_until(lambda: not unfinished(), plan.options, lambda: f"ranks {unfinished()} to finish their parts")
    parts, records, start = listings(), [], 0
    for listing in parts:
        for record in listing["shards"]:
            records.append(replace(ShardRecord.from_listing(record), start=start))
            start += record["rows"]
    if start != len(plan.dataset):
        raise CorruptCacheError(f"The parts hold {start} rows, the stream {len(plan.dataset)}: run it again.")
    for record in records:
        check_shard_size(directory, record)
    runs = [listing["run"] for listing in parts]
    stream = {"processes": world_size, "rows_per_process": [listing["part_rows"] for listing in parts]}
    write_complete_manifest(plan, records, runs, plan.options.shard_size, stream=stream)
