"""What token caches are on disk, and deleting them: ``python -m hf_efficient_probing.cache`` (like ``hf cache scan``
and ``hf cache delete``).

Each cache is a directory ``<cache_root>/<fingerprint>/``; its manifest says what it holds. A directory without a
complete manifest is an interrupted extraction (a rerun resumes it) and is listed as such.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..tables import text_table
from .location import CACHE_ENV, default_cache_root
from .manifest import MANIFEST_NAME, RANK_RECORDS_GLOB


@dataclass(frozen=True)
class CacheInfo:
    """One token cache directory: its size, age and what it holds."""

    fingerprint: str
    directory: Path
    size_bytes: int
    modified: float  # seconds since the epoch, of the newest file
    complete: bool
    rows: int | None
    backbone: str | None
    split: str | None
    feature_layers: list[int] | None
    dtype: str | None
    compute_dtype: str | None

    @property
    def age_days(self) -> float:
        return (time.time() - self.modified) / 86400


def scan_caches(cache_root: str | Path | None = None) -> list[CacheInfo]:
    """Every cache directory under ``cache_root`` (default: :func:`default_cache_root`), largest first."""
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    if not root.is_dir():
        return []
    caches = []
    for directory in sorted(path for path in root.iterdir() if path.is_dir()):
        files = [path for path in directory.iterdir() if path.is_file()]
        if not files:
            continue
        listing = _read(directory / MANIFEST_NAME) or next(map(_read, directory.glob(RANK_RECORDS_GLOB)), {})
        key = listing.get("key", {})
        caches.append(
            CacheInfo(
                fingerprint=directory.name,
                directory=directory,
                size_bytes=sum(path.stat().st_size for path in files),
                modified=max(path.stat().st_mtime for path in files),
                complete=bool(listing.get("complete")),
                rows=listing.get("num_rows"),
                backbone=key.get("backbone"),
                split=key.get("split"),
                feature_layers=key.get("feature_layers"),
                dtype=key.get("dtype"),
                compute_dtype=key.get("compute_dtype"),
            )
        )
    return sorted(caches, key=lambda cache: -cache.size_bytes)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def delete_caches(fingerprints: list[str], cache_root: str | Path | None = None) -> list[CacheInfo]:
    """Delete the caches named by ``fingerprints`` (a unique prefix is enough); returns what was deleted."""
    caches = scan_caches(cache_root)
    chosen = []
    for fingerprint in fingerprints:
        matches = [cache for cache in caches if cache.fingerprint.startswith(fingerprint)]
        if len(matches) != 1:
            found = "no cache" if not matches else f"{len(matches)} caches"
            raise ValueError(
                f"{fingerprint!r} names {found}; pass a fingerprint (or a unique prefix) from the scan's list."
            )
        chosen.append(matches[0])
    for cache in chosen:
        shutil.rmtree(cache.directory)
    return chosen


def format_size(size_bytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size_bytes < 1000:
            return f"{size_bytes:.0f} {unit}" if unit == "B" else f"{size_bytes:.1f} {unit}"
        size_bytes /= 1000
    return f"{size_bytes:.1f} TB"


def format_table(caches: list[CacheInfo]) -> str:
    headers = ("FINGERPRINT", "SIZE", "AGE", "STATE", "ROWS", "SPLIT", "LAYERS", "DTYPE", "COMPUTE", "BACKBONE")
    rows = [
        (
            cache.fingerprint,
            format_size(cache.size_bytes),
            f"{cache.age_days:.1f} d",
            "complete" if cache.complete else "partial",
            str(cache.rows if cache.rows is not None else "?"),
            cache.split or "?",
            ",".join(map(str, cache.feature_layers or [])) or "?",
            cache.dtype or "?",
            cache.compute_dtype or "?",
            (cache.backbone or "?").split("|")[0],
        )
        for cache in caches
    ]
    return text_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hf_efficient_probing.cache", description="List token caches, or delete some of them."
    )
    parser.add_argument(
        "--cache_dir", default=None, help=f"the cache root (default: ${CACHE_ENV}, else $HF_HOME/hf_efficient_probing)"
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("scan", help="list the caches with their size, age and contents (the default)")
    delete = commands.add_parser("delete", help="delete caches by fingerprint (or a unique prefix)")
    delete.add_argument("fingerprints", nargs="+")
    args = parser.parse_args(argv)
    root = Path(args.cache_dir) if args.cache_dir else default_cache_root()
    if args.command == "delete":
        try:
            deleted = delete_caches(args.fingerprints, root)
        except ValueError as error:
            parser.error(str(error))
        for cache in deleted:
            print(f"deleted {cache.fingerprint} ({format_size(cache.size_bytes)})")
        return 0
    caches = scan_caches(root)
    if not caches:
        print(f"No token caches in {root}.")
        return 0
    print(format_table(caches))
    print(f"\n{len(caches)} cache(s), {format_size(sum(c.size_bytes for c in caches))} in {root}")
    return 0
