"""Atomic files and folders: a reader, or a process killed part-way, sees the old content or the new, never a mix.

The one implementation every writer of the package uses (probe checkpoints, token-cache shards and manifests, the
demo's converted backbone): write aside, fsync, rename into place, fsync the folder that holds the rename.
Standard library only, so that the lowest layers (``cache/``) can use it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_directory(directory: str | os.PathLike) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path``: a temporary file beside it, fsynced, then renamed over ``path``."""
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


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON to ``path`` (`atomic_write_bytes`): a result file is whole or absent."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())


def fsync_tree(directory: str | os.PathLike) -> None:
    """fsync every file under ``directory`` and every folder of it, so that moving them afterwards is durable."""
    for root, _, files in os.walk(directory):
        for name in files:
            with open(Path(root, name), "rb") as file:
                os.fsync(file.fileno())
        fsync_directory(root)


@contextmanager
def staging_directory(parent: str | os.PathLike, prefix: str) -> Iterator[Path]:
    """A fresh folder in ``parent`` (same file system, so that its files can be renamed into place) to write into;
    removed if the block fails, left for the caller to move (after `fsync_tree`) if it succeeds."""
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Write a whole folder aside and make it appear as ``target`` in one rename when the block succeeds.

    Yields the folder to write into. If ``target`` appeared meanwhile (a concurrent writer finished first), that one
    is kept and the new one discarded."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with staging_directory(target.parent, prefix=f".{target.name}.tmp-") as staging:
        yield staging
        fsync_tree(staging)
        try:
            os.replace(staging, target)
        except OSError:
            if not target.is_dir():  # not a concurrent writer that finished first
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        fsync_directory(target.parent)
