"""Image- and video-classification data from `datasets`: the paper's benchmarks by name, any Hub id or local folder,
checked.

Loading gives a ``DatasetDict`` with a ``train`` and a ``validation`` split, the image (or video) and label columns
found (or given) and every label checked against the class list, so that a wrong data set fails before training with
an error that names the split, the column and the fix. A video data set has a `datasets.Video` column (a Hub data
set, or a folder of video files with class sub-folders, read by `datasets`' ``videofolder``). Low-shot subsets and
unreadable images or videos are handled here too; `training.prepared` turns the result into a job's
:class:`PreparedData`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import numpy as np
from datasets import ClassLabel, DatasetDict, IterableDatasetDict
from datasets import Image as ImageFeature
from datasets import Video as VideoFeature

from ..images import ImageDecodeError, decode_image
from ..video import VIDEO_SUFFIXES, ClipSampling, VideoDecodeError, check_video
from .arguments import DataArguments

logger = logging.getLogger(__name__)

TRAIN, SELECTION, VALIDATION = "train", "selection", "validation"  # selection: held out from train
_IMAGE_COLUMN_NAMES = ("image", "img", "jpg", "png", "picture", "video", "mp4", "clip")
_LABEL_COLUMN_NAMES = ("label", "labels", "fine_label", "class", "cls", "target")


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark of the paper lives on the Hub and how its splits map to train / validation.

    ``eval_split`` is the split the paper reports on (its test or validation set). ``val_fraction_of_train`` makes a
    stratified validation split from the training split for data sets that have no held-out split of their own.
    """

    hub_id: str
    image_column: str | None = "image"
    label_column: str | None = "label"
    train_split: str | None = "train"
    eval_split: str | None = "test"
    config_name: str | None = None
    val_fraction_of_train: float | None = None


# The paper's benchmarks (official `DATASET_SPECS`). Hub copies of the academic data sets; any field can be
# overridden from the command line (`--dataset_name`, `--image_column_name`, ...).
BENCHMARKS: dict[str, BenchmarkSpec] = {
    "imagenet-1k": BenchmarkSpec("ILSVRC/imagenet-1k", eval_split="validation"),
    "places365": BenchmarkSpec(
        "haideraltahan/wds_places365", image_column="jpg", label_column="cls", eval_split="validation"
    ),
    "cifar-100": BenchmarkSpec("uoft-cs/cifar100", image_column="img", label_column="fine_label"),
    "food-101": BenchmarkSpec("ethz/food101", eval_split="validation"),
    "stanford-cars": BenchmarkSpec("tanganke/stanford_cars"),
    "fgvc-aircraft": BenchmarkSpec("Donghyun99/FGVC-Aircraft"),
    "sun397": BenchmarkSpec("tanganke/sun397"),
    "dtd": BenchmarkSpec("tanganke/dtd"),
    "oxford-iiit-pet": BenchmarkSpec("timm/oxford-iiit-pet"),
    "cub-200": BenchmarkSpec("bentrevett/caltech-ucsd-birds-200-2011"),
    "stl-10": BenchmarkSpec("tanganke/stl10"),
}


class DataError(ValueError):
    """A data set that cannot be trained on as given; the message says what is wrong and how to fix it."""


def load_image_dataset(data_args: DataArguments | str, hub: dict | None = None) -> tuple[DatasetDict, str, str]:
    """Load the data set ``data_args`` names (or a name/path given alone) and return
    ``(DatasetDict(train=..., validation=...), image_column, label_column)``.

    ``data_args.dataset_name`` is a benchmark name of :data:`BENCHMARKS`, a Hub id, a directory saved with
    ``save_to_disk``, or an image folder (``train/<class>/*.jpg`` and ``validation/<class>/*.jpg``); the columns are
    found from the features when not given; the evaluation split defaults to ``validation``, then ``val``, then
    ``test``, or is a stratified ``val_fraction_of_train`` of the training split. ``hub`` holds ``cache_dir`` and
    ``token`` for Hub data sets (``--cache_dir``, ``--token``)."""
    data_args = DataArguments(dataset_name=data_args) if isinstance(data_args, str) else data_args
    spec = BENCHMARKS.get(data_args.dataset_name) or BenchmarkSpec(data_args.dataset_name, None, None, None, None)
    name = spec.hub_id
    raw = _load(name, data_args.dataset_config_name or spec.config_name, hub or {}, data_args.streaming)
    train_split = data_args.train_split or spec.train_split or TRAIN
    if train_split not in raw:
        raise DataError(f"{name!r} has no split {train_split!r}; its splits are {sorted(raw)}. Pass --train_split.")
    train = raw[train_split]
    image_column = data_args.image_column_name or spec.image_column or detect_image_column(train)
    label_column = data_args.label_column_name or spec.label_column or detect_label_column(train)
    for column, flag in ((image_column, "--image_column_name"), (label_column, "--label_column_name")):
        if column not in train.column_names:
            raise DataError(
                f"Split {train_split!r} has no column {column!r}; its columns are {train.column_names}. Pass {flag}."
            )
    fraction = data_args.val_fraction_of_train or spec.val_fraction_of_train
    if fraction is not None and data_args.streaming:
        raise DataError(
            f"{name!r} has no evaluation split of its own, and a stratified one cannot be drawn from a stream: pass "
            "--eval_split, or drop --streaming."
        )
    if fraction is not None:
        train, validation = stratified_split(train, label_column, fraction, data_args.subset_seed)
    else:
        validation = raw[_evaluation_split(name, raw, train_split, data_args.eval_split or spec.eval_split)]
    splits = {TRAIN: train, VALIDATION: validation}
    return (IterableDatasetDict if data_args.streaming else DatasetDict)(splits), image_column, label_column


def _evaluation_split(name: str, raw: DatasetDict, train_split: str, asked: str | None) -> str:
    split = asked or next((s for s in (VALIDATION, "val", "test") if s in raw and s != train_split), None)
    if split is None:
        raise DataError(
            f"{name!r} has no evaluation split (its splits are {sorted(raw)}). Pass --eval_split, or "
            "--val_fraction_of_train 0.1 to hold out a stratified part of the training split."
        )
    if split not in raw:
        raise DataError(f"{name!r} has no split {split!r}; its splits are {sorted(raw)}. Pass --eval_split.")
    return split


def _load(name_or_path: str, config_name: str | None, hub: dict, streaming: bool = False) -> dict:
    """The data set's splits: `datasets.Dataset`s, or with ``streaming`` `datasets.IterableDataset`s."""
    if os.path.isdir(name_or_path):
        if os.path.exists(os.path.join(name_or_path, "dataset_dict.json")):
            loaded = datasets.load_from_disk(name_or_path)
            return {split: data.to_iterable_dataset() for split, data in loaded.items()} if streaming else loaded
        subdirs = [d for d in os.listdir(name_or_path) if os.path.isdir(os.path.join(name_or_path, d))]
        if TRAIN in subdirs:  # an image or video folder: train/<class>/..., validation/<class>/...
            builder = "videofolder" if _holds_videos(os.path.join(name_or_path, TRAIN)) else "imagefolder"
            return datasets.load_dataset(
                builder, data_dir=name_or_path, cache_dir=hub.get("cache_dir"), streaming=streaming
            )
    loaded = datasets.load_dataset(name_or_path, config_name, streaming=streaming, **hub)
    if isinstance(loaded, (datasets.Dataset, datasets.IterableDataset)):
        loaded = {TRAIN: loaded}
    return loaded


def _holds_videos(folder: str) -> bool:
    """Whether a split folder of class sub-folders holds video files (else it is read as an image folder)."""
    return any(name.lower().endswith(VIDEO_SUFFIXES) for _, _, names in os.walk(folder) for name in names)


def is_video_column(dataset: datasets.Dataset, column: str) -> bool:
    """Whether ``column`` holds videos: a `datasets.Video` column."""
    return isinstance(dataset.features.get(column), VideoFeature)


def detect_image_column(dataset: datasets.Dataset) -> str:
    """The column of `datasets.Image` or `datasets.Video` type (or a usual image or video column name)."""
    typed = [name for name, feature in dataset.features.items() if isinstance(feature, (ImageFeature, VideoFeature))]
    if len(typed) == 1:
        return typed[0]
    named = [name for name in _IMAGE_COLUMN_NAMES if name in dataset.column_names]
    if named:
        return named[0]
    raise DataError(
        f"Cannot tell which column holds the images (columns {dataset.column_names}, image-typed {typed or 'none'}). "
        "Pass --image_column_name."
    )


def detect_label_column(dataset: datasets.Dataset) -> str:
    """The `ClassLabel` column (or a usual label column name when there is no or several `ClassLabel` columns)."""
    named = [name for name in _LABEL_COLUMN_NAMES if name in dataset.column_names]
    typed = [name for name, feature in dataset.features.items() if isinstance(feature, ClassLabel)]
    if len(typed) == 1:
        return typed[0]
    if named:
        return named[0]
    raise DataError(
        f"Cannot tell which column holds the labels (columns {dataset.column_names}, ClassLabel columns "
        f"{typed or 'none'}). Pass --label_column_name."
    )


def class_names(dataset: DatasetDict, label_column: str) -> list[str]:
    """Class names from the training split's `ClassLabel` feature, else ``"0" .. "C-1"`` from the labels seen."""
    feature = dataset[TRAIN].features.get(label_column)
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    labels = class_labels(dataset[TRAIN], label_column, TRAIN)
    return [str(i) for i in range(int(labels.max()) + 1)] if labels.size else []


def check_dataset(dataset: DatasetDict, label_column: str, num_labels: int) -> None:
    """Fail with a clear message on empty splits, fewer than two classes, non-integer labels, labels outside
    ``[0, num_labels)`` and validation classes that the training split never shows: before any backbone runs."""
    if num_labels < 2:
        raise DataError(
            f"Column {label_column!r} names {num_labels} class{'es' if num_labels != 1 else ''}: a classifier needs "
            "at least two (with one, every prediction is right and transformers would train a regression instead). "
            "Check --label_column_name, or give the data set a ClassLabel feature with every class."
        )
    seen = {}
    for split in (TRAIN, VALIDATION):
        if split not in dataset or len(dataset[split]) == 0:
            raise DataError(
                f"The {split!r} split is empty. Check the split names (--train_split/--eval_split), the data directory, "
                "or the low-shot settings."
            )
        labels = class_labels(dataset[split], label_column, split)
        bad = labels[(labels < 0) | (labels >= num_labels)]
        if bad.size:
            raise DataError(
                f"Column {label_column!r} of split {split!r} has labels {sorted(set(bad.tolist()))[:10]} outside "
                f"[0, {num_labels}). Give the data set a ClassLabel feature with all {num_labels} classes, or set "
                "num_labels to the number of classes."
            )
        seen[split] = set(np.unique(labels).tolist())
    unseen = sorted(seen[VALIDATION] - seen[TRAIN])
    if unseen:
        raise DataError(
            f"The 'validation' split has classes that the 'train' split never shows: {unseen[:10]}"
            f"{' ...' if len(unseen) > 10 else ''} (column {label_column!r}). A probe cannot learn them: remove them "
            "from validation, or hold out a stratified validation split with --val_fraction_of_train."
        )


def class_labels(dataset: datasets.Dataset, label_column: str, split: str) -> np.ndarray:
    if label_column not in dataset.column_names:
        raise DataError(
            f"Split {split!r} has no column {label_column!r}; its columns are {dataset.column_names}. Pass "
            "--label_column_name."
        )
    values = list(dataset[label_column])
    if not values:
        raise DataError(f"Column {label_column!r} of split {split!r} holds no labels: the split is empty.")
    if values and not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        example = next(v for v in values if not isinstance(v, (int, np.integer)) or isinstance(v, bool))
        raise DataError(
            f"Column {label_column!r} of split {split!r} holds {type(example).__name__} labels (e.g. {example!r}), "
            "not class indices. Encode them once for all splits, e.g. "
            f"`dataset = dataset.cast_column({label_column!r}, datasets.ClassLabel(names=sorted_class_names))`, or "
            "use an image folder (class = sub-folder name)."
        )
    return np.asarray(values, dtype=np.int64)


def stratified_split(
    dataset: datasets.Dataset, label_column: str, fraction: float, seed: int = 0
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split off ``fraction`` of every class (at least one image of classes with two or more) as a validation set."""
    if not 0 < fraction < 1:
        raise DataError(f"val_fraction_of_train must be in (0, 1), got {fraction}.")
    labels = class_labels(dataset, label_column, TRAIN)
    rng = np.random.default_rng(seed)
    held_out = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = min(max(1, int(round(fraction * len(members)))), len(members) - 1)
        held_out.extend(members[:count].tolist())
    held = np.zeros(len(labels), dtype=bool)
    held[held_out] = True
    return dataset.select(np.flatnonzero(~held)), dataset.select(np.flatnonzero(held))


def low_shot_indices(
    labels: Sequence[int], shots_per_class: int | None = None, fraction: float | None = None, seed: int = 0
) -> list[int]:
    """Indices of a stratified subset: ``shots_per_class`` images of every class, or ``fraction`` of every class
    (at least one). The same labels and seed always give the same subset. Classes with fewer images than asked
    keep all of them (a warning says which)."""
    if (shots_per_class is None) == (fraction is None):
        raise ValueError("Give exactly one of shots_per_class or fraction.")
    if shots_per_class is not None and shots_per_class < 1:
        raise ValueError(f"shots_per_class must be >= 1, got {shots_per_class}.")
    if fraction is not None and not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen, short = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = shots_per_class if shots_per_class is not None else max(1, int(round(fraction * len(members))))
        if count > len(members):
            short.append(int(label))
        chosen.extend(members[:count].tolist())
    if short:
        logger.warning("Classes %s have fewer than %s training images; all of theirs are used.", short, shots_per_class)
    return sorted(chosen)


def low_shot_subset(
    dataset: datasets.Dataset,
    label_column: str,
    shots_per_class: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
) -> datasets.Dataset:
    """The stratified low-shot subset of a training split (see :func:`low_shot_indices`)."""
    return dataset.select(low_shot_indices(class_labels(dataset, label_column, TRAIN), shots_per_class, fraction, seed))


def find_unreadable(dataset: datasets.Dataset, column: str, clips: ClipSampling | None = None) -> list[int]:
    """Indices of the rows whose image cannot be decoded (by the package's checked decoder), or with ``clips``, whose
    video cannot be decoded or is too short for one clip (`video.check_video`)."""
    raw = undecoded(dataset, column)
    bad = []
    for index in range(len(raw)):
        try:
            if clips is None:
                decode_image(raw[index][column])
            else:
                check_video(raw[index][column], clips)
        except (ImageDecodeError, VideoDecodeError):
            bad.append(index)
    return bad


def undecoded(dataset: datasets.Dataset, column: str) -> datasets.Dataset:
    """``dataset`` with its image or video column left as the stored bytes or path (``decode=False``), so that
    images and videos are decoded one by one by the package's checked decoders, whose errors name the row."""
    feature = dataset.features.get(column)
    if isinstance(feature, ImageFeature):
        return dataset.cast_column(column, ImageFeature(decode=False))
    if isinstance(feature, VideoFeature):
        return dataset.cast_column(column, VideoFeature(decode=False))
    return dataset
