"""What a probe checkpoint holds, how it is written (atomically) and how its kind is read back.

A checkpoint is one of three kinds, recorded in its ``config.json`` (``checkpoint_kind``):

* ``probe``: the probe's tensors only (a few MB), in the spirit of a `peft` adapter; the config names the frozen
  backbone by id and revision, and loading re-attaches it;
* ``probe_with_adapter``: the same plus a `peft` adapter (LoRA) trained on the backbone, in ``backbone_adapter/``;
* ``full``: probe and backbone, loadable as any `transformers` model.

`checkpoint_tensors` decides which tensors each kind holds, for saving (what is written) and loading (what the file
must hold) alike. Checkpoints written before the kind was recorded are read through `recorded_kind`, which infers it,
once, from their tensors and config. Saving never changes the model's config: the kind is written into the saved
file only.
"""

from __future__ import annotations

import enum
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoImageProcessor, AutoVideoProcessor
from transformers.utils import cached_file, logging

from .atomic import atomic_write_bytes, fsync_directory, fsync_tree, staging_directory

PROBE_PREFIX = "probe."
BACKBONE_PREFIX = "backbone."
CONFIG_NAME = "config.json"
SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PICKLE_WEIGHTS_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
BACKBONE_ADAPTER_DIR = "backbone_adapter"
STAGING_PREFIX = ".saving-"
STAGED_FILES = ".staged.json"  # written last into a staging folder: its files are complete, they can be moved
logger = logging.get_logger(__name__)


class CheckpointKind(str, enum.Enum):
    PROBE = "probe"
    PROBE_WITH_ADAPTER = "probe_with_adapter"
    FULL = "full"


def kind_to_save(config, backbone: torch.nn.Module, save_backbone: bool | None) -> CheckpointKind:
    """The kind a save writes: probe-only when the config names the frozen backbone (with its `peft` adapter when
    the backbone carries one), else full; ``save_backbone`` forces the choice."""
    if save_backbone is None:
        save_backbone = not config.backbone_name_or_path or not config.freeze_backbone
    if save_backbone:
        return CheckpointKind.FULL
    if not config.backbone_name_or_path:
        raise ValueError(
            "A probe-only checkpoint must name its backbone, but config.backbone_name_or_path is not set. "
            "Set it to the backbone's Hub id or path, or save with save_backbone=True."
        )
    return CheckpointKind.PROBE_WITH_ADAPTER if hasattr(backbone, "peft_config") else CheckpointKind.PROBE


def checkpoint_tensors(kind: CheckpointKind, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint of ``kind`` holds, out of a model's state dict: every one for a full checkpoint, the
    probe's (``probe.*``: its parameters and BatchNorm statistics) otherwise."""
    if kind is CheckpointKind.FULL:
        return dict(state_dict)
    return {key: value for key, value in state_dict.items() if key.startswith(PROBE_PREFIX)}


def check_checkpoint_tensors(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> None:
    """Fail clearly when a checkpoint's tensors are not the ones `checkpoint_tensors` says the model needs."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong_shape = [
        f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(expected[key].shape)}"
        for key, value in found.items()
        if key in expected and value.shape != expected[key].shape
    ]
    if missing or unexpected or wrong_shape:
        raise ValueError(
            "The checkpoint does not hold this probe. "
            f"Missing: {missing or 'none'}; unexpected: {unexpected or 'none'}; "
            f"shape mismatches: {wrong_shape or 'none'}. Check that the config matches the weights."
        )


def recorded_kind(config, weights: str | None) -> CheckpointKind:
    """The kind of a saved checkpoint: the one its config records; for checkpoints saved before it was recorded,
    inferred from what they hold (backbone tensors or a sharded file: full; an adapter folder: probe with adapter)."""
    if config.checkpoint_kind is not None:
        return CheckpointKind(config.checkpoint_kind)
    if weights is None or _holds_backbone(weights):
        return CheckpointKind.FULL
    return CheckpointKind.PROBE_WITH_ADAPTER if config.backbone_adapter else CheckpointKind.PROBE


def _holds_backbone(weights: str) -> bool:
    with safe_open(weights, framework="pt") as checkpoint:
        return any(key.startswith(BACKBONE_PREFIX) for key in checkpoint.keys())


def resolve_weights(name_or_path, hub_kwargs: dict) -> str | None:
    """Path of the single-file safetensors checkpoint; ``None`` for a sharded one. Pickle-only repos are refused."""
    optional = {"_raise_exceptions_for_missing_entries": False, "_raise_exceptions_for_connection_errors": False}
    weights = cached_file(name_or_path, SAFE_WEIGHTS_NAME, **hub_kwargs, **optional)
    if weights is not None:
        return weights
    if cached_file(name_or_path, SAFE_WEIGHTS_INDEX_NAME, **hub_kwargs, **optional) is not None:
        return None
    for pickle_name in PICKLE_WEIGHTS_NAMES:
        if cached_file(name_or_path, pickle_name, **hub_kwargs, **optional) is not None:
            raise OSError(
                f"{name_or_path} holds only pickle weights ({pickle_name}). hf-efficient-probing reads safetensors "
                "only, because unpickling can run arbitrary code. Convert the weights to model.safetensors."
            )
    raise OSError(f"No {SAFE_WEIGHTS_NAME} found in {name_or_path}.")


def load_image_processor(name_or_path: str | None, revision: str | None = None, config=None, **hub_kwargs):
    """The image processor saved with a probe, else the one of the backbone its ``config`` names (``None`` if
    neither has one)."""
    return _load_processor(AutoImageProcessor, name_or_path, revision, config, hub_kwargs)


def load_video_processor(name_or_path: str | None, revision: str | None = None, config=None, **hub_kwargs):
    """The video processor (clips, for a video backbone) saved with a probe, else its backbone's (``None`` if
    neither has one)."""
    return _load_processor(AutoVideoProcessor, name_or_path, revision, config, hub_kwargs)


def load_probe_processor(name_or_path: str | None, revision: str | None = None, config=None, **hub_kwargs):
    """The processor a probe reads its inputs through: a video probe's (``config.frames_per_clip`` set) video
    processor, else the image processor; saved with the probe, else its backbone's (``None`` if neither has one)."""
    video = config is not None and config.frames_per_clip is not None
    return (load_video_processor if video else load_image_processor)(name_or_path, revision, config, **hub_kwargs)


def _load_processor(auto_class, name_or_path, revision, config, hub_kwargs):
    sources = [(name_or_path, revision)]
    if config is not None:
        sources.append((config.backbone_name_or_path, config.backbone_revision))
    for source, source_revision in sources:
        if not source:
            continue
        try:
            return auto_class.from_pretrained(source, revision=source_revision, **hub_kwargs)
        except OSError:
            continue
    return None


# ----------------------------------------------------------------------------------------------------------------
# Writing: everything goes to a staging folder first and is moved into place only once all is written, so that a full
# disk or a killed process never leaves a half-written checkpoint over the previous one.


def write_checkpoint(save_directory: str | os.PathLike, kind: CheckpointKind, write: Callable[[Path], None]) -> None:
    """Write a checkpoint of ``kind`` into ``save_directory``: ``write(folder)`` writes its files (``config.json``
    among them) into a staging folder, the kind is recorded in that ``config.json``, and the files then replace the
    previous checkpoint's."""
    save_directory = Path(save_directory)
    save_directory.mkdir(parents=True, exist_ok=True)
    finish_interrupted_save(save_directory, discard_incomplete=True)
    with staging_directory(save_directory, prefix=STAGING_PREFIX) as staging:
        write(staging)
        _record_kind(staging / CONFIG_NAME, kind)
        fsync_tree(staging)
        atomic_write_bytes(staging / STAGED_FILES, json.dumps(sorted(os.listdir(staging))).encode())
    _commit_staging(staging, save_directory)


def _record_kind(config_file: Path, kind: CheckpointKind) -> None:
    fields = json.loads(config_file.read_text())
    fields["checkpoint_kind"] = kind.value
    fields["backbone_adapter"] = BACKBONE_ADAPTER_DIR if kind is CheckpointKind.PROBE_WITH_ADAPTER else None
    config_file.write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n")


def _commit_staging(staging: Path, save_directory: Path) -> None:
    """Move a complete staging folder's files into ``save_directory`` (``config.json`` last), replacing the
    previous checkpoint's files and deleting its stale shards, then remove the folder. Running it again after a
    kill part-way finishes the same moves: the list of files to move is the one written when staging ended."""
    names = json.loads((staging / STAGED_FILES).read_text())
    for stale in [*save_directory.glob("model*.safetensors*"), save_directory / BACKBONE_ADAPTER_DIR]:
        if stale.name not in names and stale.exists():
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    for name in sorted(names, key=lambda name: name == CONFIG_NAME):
        if not (staging / name).exists():  # moved before a kill
            continue
        if (save_directory / name).is_dir():
            shutil.rmtree(save_directory / name)
        os.replace(staging / name, save_directory / name)
    fsync_directory(save_directory)
    shutil.rmtree(staging)


def finish_interrupted_save(save_directory: str | os.PathLike, discard_incomplete: bool = False) -> None:
    """Make a local checkpoint directory whole after a save that was killed: a save killed while moving its files
    into place is finished (its files were all written; the previous checkpoint is untouched until then). With
    ``discard_incomplete`` (before a new save), staging folders of saves killed while writing are removed; a load
    leaves them, as they may belong to a save still running. A directory without leftovers, or a Hub id, is left
    as it is."""
    save_directory = Path(save_directory)
    if not save_directory.is_dir():
        return
    for staging in sorted(save_directory.glob(f"{STAGING_PREFIX}*")):
        if (staging / STAGED_FILES).is_file():
            logger.warning("Finishing the save to %s that was interrupted while moving its files.", save_directory)
            _commit_staging(staging, save_directory)
        elif discard_incomplete:
            shutil.rmtree(staging, ignore_errors=True)
