"""Selection: the split held out from train, and the choices made on it (each member's best epoch, each kind's
member), never on the split a run reports.

The default protocol holds out a stratified, seeded fraction of every class of the training split
(:func:`hold_out_for_selection`, the ``stratified`` rule), or under the ``hash`` rule the same fraction of every class
chosen by a seeded hash of each image's stored bytes (:func:`hash_selection_mask`): an image's side then depends on
the images of its class only, never on their order or on how a stream is split between processes, so a streamed
split (`training.streaming`) and the same data set loaded whole hold out the same images. During training, :class:`GridSelection` snapshots each member at its best epoch on
that split (``selection_<member>_accuracy`` in the log); at the end :func:`chosen_members` picks each probe kind's
best setting (by its mean over seeds, with ``--seeds``). Ties go to the earliest epoch, and to the member listed
first (lower layer order, lower learning rate).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable, Sequence

import datasets
import numpy as np
import torch
from transformers import TrainerCallback

from .data import DataError, class_labels
from .multilabel import MULTI_LABEL_METRICS, MULTI_LABEL_PROBLEM

SELECTION_PREFIX = "selection"  # the metric prefix of the held-out split's figures (the evaluation split's: "eval")
MIN_SELECTION_PER_CLASS = 2  # held out per class, at least: one image says too little about a class
SINGLE_LABEL_METRICS = ("accuracy", "top5_accuracy")
SELECTION_RULES = ("stratified", "hash")
STRATIFIED_RULE = "stratified: this fraction of every class of train (at least 2 per class), drawn with this seed"
HASH_RULE = (
    "hash: this fraction of every class of train (at least 2 per class), the images whose seeded hash of their stored "
    "bytes is lowest; the same images whatever the order, the processes or streaming"
)


def scored_metrics(config) -> tuple[str, str]:
    """The two figures every evaluation gives a probe of ``config``: top-1 and top-5 accuracy, or for a multi-label
    probe macro and micro mean average precision. The first is the one members, epochs and rungs are chosen on."""
    return MULTI_LABEL_METRICS if config.problem_type == MULTI_LABEL_PROBLEM else SINGLE_LABEL_METRICS


def hold_out_for_selection(
    dataset: datasets.Dataset,
    label_column: str,
    fraction: float,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    min_per_class: int = MIN_SELECTION_PER_CLASS,
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """``(train, selection)``: ``fraction`` of every class of the training split (at least ``min_per_class``), drawn
    with ``seed``, held out to choose learning rate, layer and epoch, so that the evaluation split is never read for
    a choice. A class too small to give that and keep one training image is an error that names it."""
    held = selection_mask(class_labels(dataset, label_column, "train"), fraction, seed, class_names, min_per_class)
    return dataset.select(np.flatnonzero(~held)), dataset.select(np.flatnonzero(held))


def selection_mask(
    labels: np.ndarray,
    fraction: float,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    min_per_class: int = MIN_SELECTION_PER_CLASS,
) -> np.ndarray:
    """The rows of ``labels`` that :func:`hold_out_for_selection` holds out, as a boolean mask."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), dtype=bool)
    for label, count in _selection_counts(labels, fraction, class_names, min_per_class).items():
        members = rng.permutation(np.flatnonzero(labels == label))
        held[members[:count]] = True
    return held


def _selection_counts(labels, fraction, class_names=None, min_per_class=MIN_SELECTION_PER_CLASS) -> dict[int, int]:
    """How many images of each class a selection split holds out: ``fraction`` of it, at least ``min_per_class``,
    and one left to train on, or the error names the class."""
    if not 0 < fraction < 1:
        raise DataError(f"--selection_fraction must be in (0, 1), got {fraction}.")
    counts = {}
    for label in np.unique(labels):
        total = int((labels == label).sum())
        count = max(min_per_class, int(round(fraction * total)))
        if count >= total:
            name = class_names[label] if class_names is not None and label < len(class_names) else str(label)
            raise DataError(
                f"Class {name!r} (label {label}) has {total} training images: holding out {count} of them to "
                f"choose the probe (--selection_fraction {fraction}, at least {min_per_class} per class) would leave "
                f"none to train on. Add images of that class (at least {min_per_class + 1}), or remove it."
            )
        counts[int(label)] = count
    return counts


def image_id(value) -> int:
    """A 64-bit id of one image from its stored bytes (a `datasets` ``{"bytes", "path"}`` value, bytes or a path):
    the same image has the same id in a streamed and a loaded copy of a data set, in any order and on any rank."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (str, os.PathLike)):
        with open(value, "rb") as file:
            value = file.read()
    if not isinstance(value, (bytes, bytearray)):
        raise DataError(f"The hash selection rule reads each image's stored bytes; got a {type(value).__name__}.")
    return int.from_bytes(hashlib.sha256(value).digest()[:8], "little")


def seeded_draws(ids: np.ndarray, seed: int) -> np.ndarray:
    """Each image's draw (by :func:`image_id`) for ``seed``: a uint64 that depends on that image and the seed only."""
    salt = hashlib.sha256(f"selection-seed-{seed}".encode()).digest()
    draws = [int.from_bytes(hashlib.sha256(salt + int(i).to_bytes(8, "little")).digest()[:8], "little") for i in ids]
    return np.asarray(draws, dtype=np.uint64)


def hash_selection_mask(
    ids: np.ndarray,
    labels: np.ndarray,
    fraction: float,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """The rows the hash rule holds out: per class, as many as the stratified rule (:func:`selection_mask`), those
    with the lowest seeded draws (:func:`seeded_draws`, ties by id). Copies of one image share its side."""
    counts = _selection_counts(labels, fraction, class_names)
    draws, held_ids = seeded_draws(ids, seed), set()
    for label, count in counts.items():
        members = np.flatnonzero(labels == label)
        order = np.lexsort((ids[members], draws[members]))
        held_ids.update(ids[members[order[:count]]].tolist())
    return np.isin(ids, np.fromiter(held_ids, dtype=np.uint64, count=len(held_ids)))


def ids_fingerprint(ids: Iterable[int]) -> str:
    """A short hash of a set of image ids (:func:`image_id`): which images a split holds, in any order."""
    return hashlib.sha256(np.sort(np.asarray(list(ids), dtype=np.uint64)).tobytes()).hexdigest()[:16]


def indices_fingerprint(indices: Sequence[int]) -> str:
    """A short hash of a list of row indices: which rows a split holds, comparable across runs and files."""
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]


def best_epoch(log_history: list[dict], metric: str = "eval_accuracy") -> dict | None:
    """The evaluation log entry with the highest ``metric`` (the earliest on ties)."""
    evaluations = [entry for entry in log_history if metric in entry and "epoch" in entry]
    if not evaluations:
        return None
    return max(evaluations, key=lambda entry: entry[metric])


class GridSelection(TrainerCallback):
    """After every evaluation on the selection split: snapshot each member whose selection ``metric`` (accuracy; a
    multi-label grid's mean average precision) improved (the earliest epoch wins ties). Works on any model with
    ``metric_names()``, ``heads``, ``best_heads``, ``best_accuracy`` (the best selection figure, whichever it is)
    and ``best_epoch`` (`training.grid.ProbingGridModel`)."""

    def __init__(self, metric: str = "accuracy"):
        self.metric = metric

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        if not hasattr(model, "best_heads") or not metrics:
            return
        with torch.no_grad():
            for index, name in enumerate(model.metric_names()):
                accuracy = metrics.get(f"{SELECTION_PREFIX}_{name}_{self.metric}")
                if accuracy is None or math.isnan(accuracy) or accuracy <= model.best_accuracy[index].item():
                    continue
                model.best_heads[index].load_state_dict(model.heads[index].state_dict())
                model.best_accuracy[index] = accuracy
                model.best_epoch[index] = state.epoch


def chosen_members(members: Sequence, best_accuracy: torch.Tensor) -> dict[str, list[int]]:
    """Per probe kind, the indices of the members of its chosen setting (kind x layer x learning rate x own
    settings): the setting with the best selection accuracy, averaged over its seeds (one member per setting without
    ``--seeds``); the first one on ties (the lowest layer order and learning rate as the grid lists them). A mean over
    seeds, not the best seed: the best of several noisy draws is optimistic, and the figure reported is the mean."""
    settings: dict = {}
    for index, member in enumerate(members):
        settings.setdefault(member.setting, []).append(index)
    chosen: dict[str, list[int]] = {}
    scores: dict[str, float] = {}
    for setting, indices in settings.items():
        score = float(best_accuracy[indices].mean())
        if setting.kind not in chosen or score > scores[setting.kind]:
            chosen[setting.kind], scores[setting.kind] = indices, score
    return chosen
