"""What a token cache on disk holds, and what of it can be trusted: the manifest, its shard records, their checks.

Layout of one cache (``<cache_root>/<fingerprint>/``)::

    manifest.json            key, token layout, the list of complete shards (file, first row, rows, bytes, sha256)
    shard-00000.safetensors  "tokens" [rows, N, C] in the storage dtype, "labels" [rows] int64 (class indices)
                             or [rows, C] float32 (multi-label: multi-hot vectors)
    shards-rank000.json      while extracting: the shards one rank has written (merged into the manifest at the end)

A shard is trusted only when its size and SHA-256 match its record; a manifest is complete only when it lists every
shard of its key. The extraction (`cache.extraction`) writes caches; `cache.dataset` opens and reads complete ones.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic import atomic_write_json

MANIFEST_NAME = "manifest.json"
RANK_RECORDS_PATTERN = "shards-rank{:03d}.json"  # the shards one rank has written, until the manifest lists them all
RANK_RECORDS_GLOB = "shards-rank*.json"
SHARD_PATTERN = "shard-{:05d}.safetensors"
LAYOUT_FIELDS = ("hidden_size", "num_hidden_layers", "num_prefix_tokens", "grid_size", "token_shape")


@dataclass
class ShardRecord:
    file: str
    start: int
    rows: int
    bytes: int
    sha256: str

    @classmethod
    def from_listing(cls, record: dict) -> ShardRecord:
        return cls(**{name: record[name] for name in ("file", "start", "rows", "bytes", "sha256")})


class CorruptCacheError(RuntimeError):
    """A shard the manifest lists is missing, truncated or altered."""


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def check_shard_size(directory: Path, shard: ShardRecord) -> None:
    path = directory / shard.file
    size = path.stat().st_size if path.exists() else None
    if size != shard.bytes:
        raise CorruptCacheError(
            f"Shard {path} has {size} bytes, the manifest says {shard.bytes}: it is missing or truncated. Run the "
            "extraction again; it re-extracts the shards it cannot trust."
        )


def check_shard(directory: Path, shard: ShardRecord) -> None:
    """Size and SHA-256 of one shard against its record."""
    check_shard_size(directory, shard)
    if sha256_file(directory / shard.file) != shard.sha256:
        raise CorruptCacheError(
            f"Shard {directory / shard.file} does not match its SHA-256 in the manifest (the file was altered). "
            "Run the extraction again; it re-extracts the shards it cannot trust."
        )


def shard_verifies(directory: Path, shard: ShardRecord) -> bool:
    try:
        check_shard(directory, shard)
    except CorruptCacheError:
        return False
    return True


def read_json(path: Path) -> dict:
    """A JSON file written atomically by this package, or ``{}`` if it is missing or not (yet) JSON."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write_json(path: Path, value: dict) -> None:
    atomic_write_json(path, value, indent=1)


def is_complete(directory: Path, key_dict: dict) -> bool:
    """Whether ``directory`` holds a complete manifest written for exactly this key."""
    manifest = read_json(directory / MANIFEST_NAME)
    return bool(manifest.get("complete")) and manifest.get("key") == key_dict


def listed_records(directory: Path, key_dict: dict, num_rows: int) -> dict[int, dict]:
    """Every shard some rank (or an earlier manifest) lists for this key, by shard index, each with its listing's
    ``shard_size``; listings of another key or row count (another extraction's leftovers) are ignored."""
    records, shard_size = {}, None
    for path in [directory / MANIFEST_NAME, *sorted(directory.glob(RANK_RECORDS_GLOB))]:
        listing = read_json(path)
        if listing.get("key") != key_dict or listing.get("num_rows") != num_rows:
            continue
        shard_size = shard_size or listing["shard_size"]
        if listing["shard_size"] != shard_size:
            continue
        for record in listing.get("shards", []):
            records[record["start"] // shard_size] = {**record, "shard_size": shard_size}
    return records


def unseen_rank_records(directory: Path, run_ids: list[str]) -> list[int]:
    """The ranks whose record file of this run (``run_ids[rank]``, each rank's own) ``directory`` does not hold."""
    return [
        rank
        for rank, run_id in enumerate(run_ids)
        if read_json(directory / RANK_RECORDS_PATTERN.format(rank)).get("run_id") != run_id
    ]


def listed_layout(directory: Path, key_dict: dict) -> dict:
    """The token layout (width, layers, [CLS], grid, shape) some listing of this key records."""
    for listing in map(read_json, [directory / MANIFEST_NAME, *sorted(directory.glob(RANK_RECORDS_GLOB))]):
        if listing.get("key") == key_dict and all(name in listing for name in LAYOUT_FIELDS):
            return {name: listing[name] for name in LAYOUT_FIELDS}
    raise CorruptCacheError(f"No listing in {directory} records the tokens' layout: run the extraction again.")


def record_of(name: str, start: int, data: bytes, rows: int) -> dict:
    """The record of a shard file ``name`` holding ``data`` (its rows from ``start``)."""
    return asdict(ShardRecord(name, start, rows, len(data), hashlib.sha256(data).hexdigest()))
