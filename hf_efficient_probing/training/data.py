"""Image-classification data from `datasets`: the paper's benchmarks by name, any Hub id or local folder, checked.

Loading gives a ``DatasetDict`` with a ``train`` and a ``validation`` split, the image and label columns found (or
given) and every label checked against the class list, so that a wrong data set fails before training with an
error that names the split, the column and the fix. :class:`ImageClassificationDataset` then decodes images one by
one and names the data-set index of any image it cannot read. :func:`prepare_data` does all of it once for a job and
returns a :class:`PreparedData`: the splits with their columns, classes and transforms, from which every job reads
its images and token caches.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import datasets
import numpy as np
import torch
from datasets import ClassLabel, DatasetDict
from datasets import Image as ImageFeature

from ..cache import TokenCache, cache_tokens_for_model, dataset_fingerprint, preprocessing_description
from .arguments import DataArguments
from .images import EVAL_RESIZE_RATIO, build_transforms

logger = logging.getLogger(__name__)

TRAIN, SELECTION, VALIDATION = "train", "selection", "validation"  # selection: held out from train
_IMAGE_COLUMN_NAMES = ("image", "img", "jpg", "png", "picture")
_LABEL_COLUMN_NAMES = ("label", "labels", "fine_label", "class", "cls", "target")


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark of the paper lives on the Hub and how its splits map to train / validation.

    ``eval_split`` is the split the paper reports on (its test or validation set). ``val_fraction_of_train`` makes a
    stratified validation split from the training split for data sets that have no held-out split of their own.
    """

    hub_id: str
    image_column: str = "image"
    label_column: str = "label"
    train_split: str = "train"
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


def load_image_dataset(
    name_or_path: str,
    config_name: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    train_split: str | None = None,
    eval_split: str | None = None,
    val_fraction_of_train: float | None = None,
    split_seed: int = 0,
    cache_dir: str | None = None,
    token: str | None = None,
) -> tuple[DatasetDict, str, str]:
    """Load a data set and return ``(DatasetDict(train=..., validation=...), image_column, label_column)``.

    Args:
        name_or_path: a benchmark name of :data:`BENCHMARKS`, a Hub id, a directory saved with
            ``save_to_disk``, or an image folder (``train/<class>/*.jpg`` and ``validation/<class>/*.jpg``).
        image_column, label_column: column names; found from the features when not given.
        train_split, eval_split: split names in the data set (``eval_split`` defaults to ``validation``, then
            ``val``, then ``test``).
        val_fraction_of_train: make the validation split from this stratified fraction of the training split
            (used when the data set has no evaluation split, or when asked).
    """
    spec = BENCHMARKS.get(name_or_path)
    if spec is not None:
        name_or_path, config_name = spec.hub_id, config_name or spec.config_name
        image_column, label_column = image_column or spec.image_column, label_column or spec.label_column
        train_split, eval_split = train_split or spec.train_split, eval_split or spec.eval_split
        val_fraction_of_train = val_fraction_of_train or spec.val_fraction_of_train
    raw = _load(name_or_path, config_name, cache_dir, token)
    train_split = train_split or TRAIN
    if train_split not in raw:
        raise DataError(
            f"{name_or_path!r} has no split {train_split!r}; its splits are {sorted(raw)}. Pass --train_split."
        )
    if val_fraction_of_train is None:
        eval_split = eval_split or next((s for s in (VALIDATION, "val", "test") if s in raw and s != train_split), None)
        if eval_split is None:
            raise DataError(
                f"{name_or_path!r} has no evaluation split (its splits are {sorted(raw)}). Pass --eval_split, or "
                "--val_fraction_of_train 0.1 to hold out a stratified part of the training split."
            )
        if eval_split not in raw:
            raise DataError(
                f"{name_or_path!r} has no split {eval_split!r}; its splits are {sorted(raw)}. Pass --eval_split."
            )
    train = raw[train_split]
    image_column = image_column or detect_image_column(train)
    label_column = label_column or detect_label_column(train)
    for column in (image_column, label_column):
        if column not in train.column_names:
            flag = "--image_column_name" if column == image_column else "--label_column_name"
            raise DataError(
                f"Split {train_split!r} has no column {column!r}; its columns are {train.column_names}. Pass {flag}."
            )
    if val_fraction_of_train is not None:
        train, validation = stratified_split(train, label_column, val_fraction_of_train, split_seed)
    else:
        validation = raw[eval_split]
    return DatasetDict({TRAIN: train, VALIDATION: validation}), image_column, label_column


def _load(name_or_path: str, config_name: str | None, cache_dir: str | None, token: str | None) -> DatasetDict:
    if os.path.isdir(name_or_path):
        if os.path.exists(os.path.join(name_or_path, "dataset_dict.json")):
            return datasets.load_from_disk(name_or_path)
        subdirs = [d for d in os.listdir(name_or_path) if os.path.isdir(os.path.join(name_or_path, d))]
        if TRAIN in subdirs:  # an image folder: train/<class>/..., validation/<class>/...
            return datasets.load_dataset("imagefolder", data_dir=name_or_path, cache_dir=cache_dir)
    loaded = datasets.load_dataset(name_or_path, config_name, cache_dir=cache_dir, token=token)
    if not isinstance(loaded, DatasetDict):
        loaded = DatasetDict({TRAIN: loaded})
    return loaded


def detect_image_column(dataset: datasets.Dataset) -> str:
    """The column of `datasets.Image` type (or a usual image column name)."""
    typed = [name for name, feature in dataset.features.items() if isinstance(feature, ImageFeature)]
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
    feature = dataset[TRAIN].features[label_column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    labels = _labels(dataset[TRAIN], label_column, TRAIN)
    return [str(i) for i in range(int(labels.max()) + 1)] if labels.size else []


def check_dataset(dataset: DatasetDict, label_column: str, num_labels: int) -> None:
    """Fail with a clear message on empty splits, non-integer labels, labels outside ``[0, num_labels)`` and
    validation classes that the training split never shows."""
    seen = {}
    for split in (TRAIN, VALIDATION):
        if split not in dataset or len(dataset[split]) == 0:
            raise DataError(
                f"The {split!r} split is empty. Check the split names (--train_split/--eval_split), the data directory, "
                "or the low-shot settings."
            )
        labels = _labels(dataset[split], label_column, split)
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


def _labels(dataset: datasets.Dataset, label_column: str, split: str) -> np.ndarray:
    if label_column not in dataset.column_names:
        raise DataError(
            f"Split {split!r} has no column {label_column!r}; its columns are {dataset.column_names}. Pass "
            "--label_column_name."
        )
    values = list(dataset[label_column])
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
    labels = _labels(dataset, label_column, TRAIN)
    rng = np.random.default_rng(seed)
    held_out = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = min(max(1, int(round(fraction * len(members)))), len(members) - 1)
        held_out.extend(members[:count].tolist())
    held = np.zeros(len(labels), dtype=bool)
    held[held_out] = True
    return dataset.select(np.flatnonzero(~held)), dataset.select(np.flatnonzero(held))


MIN_SELECTION_PER_CLASS = 2  # held out per class, at least: one image says too little about a class


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
    if not 0 < fraction < 1:
        raise DataError(f"--selection_fraction must be in (0, 1), got {fraction}.")
    labels = _labels(dataset, label_column, TRAIN)
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = max(min_per_class, int(round(fraction * len(members))))
        if count >= len(members):
            name = class_names[label] if class_names is not None and label < len(class_names) else str(label)
            raise DataError(
                f"Class {name!r} (label {label}) has {len(members)} training images: holding out {count} of them to "
                f"choose the probe (--selection_fraction {fraction}, at least {min_per_class} per class) would leave "
                f"none to train on. Add images of that class (at least {min_per_class + 1}), or remove it."
            )
        held[members[:count]] = True
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
    return dataset.select(low_shot_indices(_labels(dataset, label_column, TRAIN), shots_per_class, fraction, seed))


def find_unreadable_images(dataset: datasets.Dataset, image_column: str) -> list[int]:
    """Indices of the rows whose image cannot be decoded."""
    bad = []
    for index in range(len(dataset)):
        try:
            dataset[index][image_column].load()
        except Exception:  # noqa: BLE001 - any decoding failure means the image is unusable
            bad.append(index)
    return bad


class ImageClassificationDataset(torch.utils.data.Dataset):
    """A `datasets` split seen as ``{"pixel_values", "labels"}`` items, decoded and transformed on access.

    A torch data set rather than ``set_transform`` so that an image that cannot be read fails with its index in the
    source data set, and so that the Trainer has no columns to drop (no ``remove_unused_columns`` trap).
    """

    def __init__(
        self, dataset: datasets.Dataset, image_column: str, label_column: str, transform: Callable, split: str = ""
    ):
        self.dataset = dataset
        self.image_column = image_column
        self.label_column = label_column
        self.transform = transform
        self.split = split

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        try:
            row = self.dataset[index]
            pixel_values = self.transform(row[self.image_column])
        except Exception as error:
            raise DataError(
                f"Cannot read the image at index {index} of the {self.split or 'data'} split (column "
                f"{self.image_column!r}): {type(error).__name__}: {error}. Fix or remove that file, or run with "
                "--skip_unreadable_images to leave such images out."
            ) from error
        return {"pixel_values": pixel_values, "labels": int(row[self.label_column])}


def probing_collator(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack a batch of ``pixel_values`` (images) or ``tokens`` (cached backbone tokens) with their ``labels``."""
    batch = {}
    for key in ("pixel_values", "tokens"):
        if key in examples[0]:
            batch[key] = torch.stack([torch.as_tensor(example[key]) for example in examples])
    if not batch:
        raise ValueError(f"Examples need 'pixel_values' or 'tokens'; got keys {sorted(examples[0])}.")
    if "labels" in examples[0]:
        batch["labels"] = torch.tensor([int(example["labels"]) for example in examples], dtype=torch.long)
    return batch


@dataclass(frozen=True)
class PreparedData:
    """The data of one job, loaded and checked once (see :func:`prepare_data`): its splits, columns, classes and the
    backbone processor's transforms. Jobs read images (:meth:`images`) and token caches (:meth:`token_cache`)
    through it, so a split never travels without its columns and its transform.

    ``splits`` holds ``train`` and ``validation`` (the evaluation split), and ``selection`` once
    :meth:`hold_out_selection` has split it off ``train``. ``info`` describes the data for the run summary.
    """

    splits: DatasetDict
    image_column: str
    label_column: str
    class_names: list[str]
    image_processor: Any
    eval_resize_ratio: float = EVAL_RESIZE_RATIO
    info: dict = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.class_names)

    @property
    def label_maps(self) -> dict[str, dict]:
        """``id2label`` and ``label2id``, as a probe config takes them."""
        return {
            "id2label": dict(enumerate(self.class_names)),
            "label2id": {name: i for i, name in enumerate(self.class_names)},
        }

    @cached_property
    def eval_transform(self) -> Callable:
        """Resize and center crop (bicubic), normalised: what evaluation, selection and the token cache see."""
        return build_transforms(self.image_processor, eval_resize_ratio=self.eval_resize_ratio)[1]

    def train_transform(self, crop_scale: tuple[float, float]) -> Callable:
        """RandomResizedCrop over ``crop_scale`` + horizontal flip, normalised: live training's augmentation."""
        return build_transforms(self.image_processor, crop_scale=crop_scale, eval_resize_ratio=self.eval_resize_ratio)[
            0
        ]

    def images(self, split: str, transform: Callable | None = None) -> ImageClassificationDataset:
        """``split`` as ``{"pixel_values", "labels"}`` items, through ``transform`` (default: the eval transform)."""
        transform = transform or self.eval_transform
        return ImageClassificationDataset(self.splits[split], self.image_column, self.label_column, transform, split)

    def token_cache(self, split: str, model, cache_dir=None, feature_layers=None, **extract_kwargs) -> TokenCache:
        """The token cache of ``split`` for ``model``'s token reader (images through the eval transform), extracted
        first if it does not exist yet; ``extract_kwargs`` go to `cache_tokens_for_model` (``token_selection``,
        ``batch_size``, ``compute_dtype``, ``device``)."""
        return cache_tokens_for_model(
            model,
            self.images(split),
            cache_dir,
            preprocessing=preprocessing_description(self.image_processor, self.eval_transform),
            split=split,
            dataset_fingerprint=dataset_fingerprint(self.splits[split]),
            feature_layers=feature_layers,
            **extract_kwargs,
        )

    def hold_out_selection(self, fraction: float, seed: int = 0) -> PreparedData:
        """The same data with ``fraction`` of every class of ``train`` moved to a ``selection`` split (see
        :func:`hold_out_for_selection`): what learning rate, layer and epoch are chosen on."""
        splits = DatasetDict(self.splits)
        splits[TRAIN], splits[SELECTION] = hold_out_for_selection(
            splits[TRAIN], self.label_column, fraction, seed, self.class_names
        )
        return replace(self, splits=splits)


def prepare_data(
    data_args: DataArguments,
    image_processor,
    dataset: DatasetDict | None = None,
    name: str | None = None,
) -> PreparedData:
    """The job's :class:`PreparedData`: the data set ``data_args`` names (or ``dataset``, a ``DatasetDict`` of
    ``train`` and ``validation`` already in memory, which ``name`` names in the run summary), with unreadable
    images left out if asked, the low-shot subset and the evaluation cap applied and every label checked; its
    transforms are ``image_processor``'s."""
    if dataset is None:
        if data_args.dataset_name is None:
            raise DataError(
                "No data set: pass --dataset_name (a benchmark name, a Hub id, a save_to_disk directory or an image "
                "folder). `hf-probe train` with no arguments at all runs the offline demo instead."
            )
        dataset, image_column, label_column = load_image_dataset(
            data_args.dataset_name,
            config_name=data_args.dataset_config_name,
            image_column=data_args.image_column_name,
            label_column=data_args.label_column_name,
            train_split=data_args.train_split,
            eval_split=data_args.eval_split,
            val_fraction_of_train=data_args.val_fraction_of_train,
            split_seed=data_args.subset_seed,
        )
    else:
        dataset = DatasetDict(dataset)
        image_column = data_args.image_column_name or detect_image_column(dataset[TRAIN])
        label_column = data_args.label_column_name or detect_label_column(dataset[TRAIN])
    info: dict = {"dataset": name or data_args.dataset_name}
    if data_args.skip_unreadable_images:
        skipped = {}
        for split in (TRAIN, VALIDATION):
            bad = find_unreadable_images(dataset[split], image_column)
            if bad:
                logger.warning("Leaving out %d unreadable images of %r: indices %s", len(bad), split, bad[:20])
                dataset[split] = dataset[split].select(sorted(set(range(len(dataset[split]))) - set(bad)))
            skipped[split] = len(bad)
        info["skipped_unreadable_images"] = skipped
    if data_args.shots_per_class is not None or data_args.train_fraction is not None:
        dataset[TRAIN] = low_shot_subset(
            dataset[TRAIN], label_column, data_args.shots_per_class, data_args.train_fraction, data_args.subset_seed
        )
        info.update(shots_per_class=data_args.shots_per_class, train_fraction=data_args.train_fraction)
    if data_args.max_eval_samples is not None:
        dataset[VALIDATION] = dataset[VALIDATION].select(
            range(min(data_args.max_eval_samples, len(dataset[VALIDATION])))
        )
    labels = class_names(dataset, label_column)
    check_dataset(dataset, label_column, len(labels))
    info.update(train_samples=len(dataset[TRAIN]), eval_samples=len(dataset[VALIDATION]))
    return PreparedData(
        dataset, image_column, label_column, labels, image_processor, data_args.eval_resize_ratio, info=info
    )
