"""Resuming a run: only from a checkpoint this library wrote, for exactly the same run.

Every checkpoint a run saves records the run's identity (``run_identity.json``: the backbone, the data and its
held-out split, the grid members, the recipe, the token settings, the protocol; see `training.job.ProbingJob.identity`).
A run started again in the same ``output_dir`` resumes from the newest complete checkpoint of the same identity; a
checkpoint of another run is an error that lists the fields that differ and the two ways out, before any training.
Folders the library did not write (no identity file) are never resumed from and never deleted.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..atomic import atomic_write_json

logger = logging.getLogger(__name__)

IDENTITY_FILE = "run_identity.json"
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


class RunMismatchError(ValueError):
    """A checkpoint in ``output_dir`` belongs to another run; the message lists what differs and what to do."""


def write_identity(checkpoint_dir: str | Path, identity: dict) -> None:
    atomic_write_json(Path(checkpoint_dir) / IDENTITY_FILE, identity)


def library_checkpoints(output_dir: str | Path) -> list[Path]:
    """The ``checkpoint-<step>`` folders of ``output_dir`` that this library wrote (they hold a run identity), by
    step."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), path) for path in output_dir.iterdir() if (m := _CHECKPOINT.match(path.name))]
    return [path for _, path in sorted(found) if (path / IDENTITY_FILE).is_file()]


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest library checkpoint that was fully written (its ``trainer_state.json`` exists: the Trainer writes it
    last), so a run killed while saving resumes from the checkpoint before."""
    complete = [path for path in library_checkpoints(output_dir) if (path / "trainer_state.json").is_file()]
    return str(complete[-1]) if complete else None


def remove_checkpoints(output_dir: str | Path) -> None:
    """Delete the library's checkpoint folders of a finished (or restarted) run: they only serve resuming, and hold
    pickles. Other folders are left alone."""
    for path in library_checkpoints(output_dir):
        shutil.rmtree(path, ignore_errors=True)


def rotate_checkpoints(output_dir: str | Path, keep: int | None, best: str | None = None) -> None:
    """Delete the oldest library checkpoints beyond ``keep``, never the newest (to resume from) nor ``best``."""
    if not keep or keep <= 0:
        return
    checkpoints = library_checkpoints(output_dir)
    protected = {checkpoints[-1]} if checkpoints else set()
    if best:
        protected.add(Path(best))
    surplus = len(checkpoints) - max(keep, len(protected))
    for path in [path for path in checkpoints if path not in protected][: max(surplus, 0)]:
        shutil.rmtree(path, ignore_errors=True)


def differences(saved, current, prefix: str = "") -> list[str]:
    """The dotted keys where two identities differ."""
    if isinstance(saved, dict) and isinstance(current, dict):
        keys = sorted(set(saved) | set(current))
        return [path for key in keys for path in differences(saved.get(key), current.get(key), f"{prefix}{key}.")]
    return [] if saved == current else [prefix.rstrip(".")]


def check_same_run(checkpoint_dir: str | Path, identity: dict) -> None:
    """Refuse to resume from ``checkpoint_dir`` when it belongs to another run."""
    saved = json.loads((Path(checkpoint_dir) / IDENTITY_FILE).read_text())
    current = json.loads(json.dumps(identity, default=str))  # as the file stores it
    changed = differences(saved, current)
    if changed:
        raise RunMismatchError(
            f"{checkpoint_dir} is a checkpoint of another run: {', '.join(changed)} differ from this run's. Resuming "
            "would continue its heads and best-epoch snapshots, chosen on its own data. Use a new --output_dir, or "
            "pass --overwrite_output_dir to start over in this one (its checkpoints are deleted)."
        )


def resume_point(output_dir: str | Path, identity: dict, asked: bool | str | None, overwrite: bool) -> str | None:
    """The checkpoint to resume from: ``asked`` (a path, ``True`` for the newest, ``False`` for none); by default
    (``None``) the newest complete library checkpoint of ``output_dir``, checked to be this run's. ``overwrite``
    deletes the library's checkpoints first and starts over."""
    if overwrite:
        remove_checkpoints(output_dir)
        return None
    if asked is False:
        return None
    checkpoint = last_complete_checkpoint(output_dir) if asked in (None, True) else str(asked)
    if checkpoint is None:
        return None
    if not (Path(checkpoint) / IDENTITY_FILE).is_file():
        raise RunMismatchError(f"{checkpoint} was not written by hf-efficient-probing (no {IDENTITY_FILE}).")
    check_same_run(checkpoint, identity)
    logger.info("Resuming from %s", checkpoint)
    return checkpoint
