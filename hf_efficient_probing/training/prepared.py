"""A job's data, loaded and checked once: :func:`prepare_data` -> :class:`PreparedData`.

Every step of a job reads its images (:meth:`PreparedData.images`) and token caches (:meth:`PreparedData.token_cache`)
through it, so a split never travels without its columns, its label mapping and its preprocessing. Images are decoded
one by one by the package's checked decoder, so an unreadable file fails with its row and split.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import datasets
import numpy as np
import torch
from datasets import DatasetDict

from ..cache import CachedSplit, ExtractionOptions, TokenCache, cache_tokens_for_model, dataset_fingerprint
from ..images import ImageDecodeError, decode_image
from .arguments import DataArguments
from .data import (
    TRAIN,
    VALIDATION,
    DataError,
    check_dataset,
    class_labels,
    class_names,
    detect_image_column,
    detect_label_column,
    find_unreadable_images,
    load_image_dataset,
    low_shot_subset,
    undecoded,
)
from .multilabel import (
    MULTI_LABEL_PROBLEM,
    MultiLabelColumn,
    check_multi_label_dataset,
    multi_label_column,
    multi_label_selection_mask,
)
from .selection import SELECTION_PREFIX, indices_fingerprint, selection_mask
from .transforms import EVAL_RESIZE_RATIO, ProcessorTransform, evaluation_processor, training_transform

logger = logging.getLogger(__name__)

SELECTION = SELECTION_PREFIX  # the split held out from train


class ImageClassificationDataset(torch.utils.data.Dataset):
    """A `datasets` split seen as ``{"pixel_values", "labels"}`` items, decoded and transformed on access.

    A torch data set rather than ``set_transform`` so that an image that cannot be read fails with its index in the
    source data set, and so that the Trainer has no columns to drop (no ``remove_unused_columns`` trap).
    """

    def __init__(
        self,
        dataset: datasets.Dataset,
        image_column: str,
        label_column: str,
        transform: Callable,
        split: str = "",
        multi_label: MultiLabelColumn | None = None,
    ):
        self.dataset = undecoded(dataset, image_column)
        self.image_column = image_column
        self.label_column = label_column
        self.transform = transform
        self.split = split
        self.multi_label = multi_label

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        row = self.dataset[index]
        where = f"the image at index {index} of the {self.split or 'data'} split (column {self.image_column!r})"
        try:
            image = decode_image(row[self.image_column], where)
        except ImageDecodeError as error:  # a data set's error, as every other one of a training run
            raise DataError(str(error)) from error
        label = row[self.label_column]
        if self.multi_label is not None:  # a float32 multi-hot vector: what the BCE loss and the cache read
            label = torch.from_numpy(self.multi_label.multi_hot(label, where))
        return {"pixel_values": self.transform(image), "labels": label if self.multi_label else int(label)}


def probing_collator(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack a batch of ``pixel_values`` (images) or ``tokens`` (cached backbone tokens) with their ``labels``: class
    indices (int64), or multi-hot vectors (float32, ``[B, C]``) for a multi-label data set."""
    batch = {}
    for key in ("pixel_values", "tokens"):
        if key in examples[0]:
            batch[key] = torch.stack([torch.as_tensor(example[key]) for example in examples])
    if not batch:
        raise ValueError(f"Examples need 'pixel_values' or 'tokens'; got keys {sorted(examples[0])}.")
    if "labels" in examples[0]:
        labels = [torch.as_tensor(example["labels"]) for example in examples]
        if labels[0].is_floating_point():  # a multi-hot vector (multi-label data)
            batch["labels"] = torch.stack(labels).to(torch.float32)
        elif labels[0].ndim:  # one label per seed (`training.grid.SeedStreams`)
            batch["labels"] = torch.stack(labels).long()
        else:
            batch["labels"] = torch.tensor([int(label) for label in labels], dtype=torch.long)
    return batch


@dataclass(frozen=True)
class PreparedData:
    """The data of one job, loaded and checked once (see :func:`prepare_data`): its splits, columns, classes and the
    backbone processor.

    ``splits`` holds ``train`` and ``validation`` (the evaluation split), and ``selection`` once
    :meth:`hold_out_selection` has split it off ``train``. ``info`` describes the data for the run summary.
    ``multi_label``: how the label column encodes each image's set of classes (`training.multilabel`); ``None``
    when each image has one class.
    """

    splits: DatasetDict
    image_column: str
    label_column: str
    class_names: list[str]
    image_processor: Any
    eval_resize_ratio: float = EVAL_RESIZE_RATIO
    info: dict = field(default_factory=dict)
    multi_label: MultiLabelColumn | None = None

    @property
    def num_labels(self) -> int:
        return len(self.class_names)

    @property
    def label_maps(self) -> dict:
        """``id2label`` and ``label2id``, as a probe config takes them; for a multi-label data set also its
        ``problem_type`` (sigmoid + binary cross-entropy per class, as `transformers` heads route the loss)."""
        maps = {
            "id2label": dict(enumerate(self.class_names)),
            "label2id": {name: i for i, name in enumerate(self.class_names)},
        }
        return {**maps, "problem_type": MULTI_LABEL_PROBLEM} if self.multi_label else maps

    @cached_property
    def eval_processor(self):
        """The run's one deterministic preprocessing as an image processor (`training.transforms.evaluation_processor`):
        what the cache, selection and evaluation see, and what is saved beside every probe."""
        return evaluation_processor(self.image_processor, self.eval_resize_ratio)

    @cached_property
    def eval_transform(self) -> Callable:
        return ProcessorTransform(self.eval_processor)

    def train_transform(self, crop_scale: tuple[float, float]) -> Callable:
        """RandomResizedCrop over ``crop_scale`` + horizontal flip, normalised: live training's augmentation."""
        return training_transform(self.image_processor, crop_scale)

    def images(self, split: str, transform: Callable | None = None) -> ImageClassificationDataset:
        """``split`` as ``{"pixel_values", "labels"}`` items, through ``transform`` (default: the eval transform)."""
        transform = transform or self.eval_transform
        return ImageClassificationDataset(
            self.splits[split], self.image_column, self.label_column, transform, split, self.multi_label
        )

    def cached_split(self, split: str) -> CachedSplit:
        """What a token cache of ``split`` holds on the data side: rows, columns, label mapping, preprocessing."""
        return CachedSplit(
            dataset=dataset_fingerprint(self.splits[split]),
            split=split,
            preprocessing=self.eval_processor.to_json_string(),
            image_column=self.image_column,
            label_column=self.label_column,
            label_names=tuple(self.class_names),
        )

    def token_cache(self, split: str, model, options: ExtractionOptions | None = None, **storage) -> TokenCache:
        """The token cache of ``split`` for ``model``'s token reader (or ``reader=``, other layers or tokens of the
        same backbone), images through the eval transform, extracted first if it does not exist yet; ``storage``:
        ``storage=(storage dtype, compute dtype)`` and ``reader`` of `cache.cache_tokens_for_model`."""
        return cache_tokens_for_model(model, self.images(split), self.cached_split(split), options, **storage)

    def hold_out_selection(self, fraction: float, seed: int = 0) -> PreparedData:
        """The same data with ``fraction`` of every class of ``train`` moved to a ``selection`` split (see
        `training.selection.hold_out_for_selection`): what learning rate, layer and epoch are chosen on. ``info``
        records the rule and which rows it held out."""
        train = self.splits[TRAIN]
        if self.multi_label:
            held = multi_label_selection_mask(len(train), fraction, seed)
            rule = "random, not stratified (an image has several classes): this fraction of train, drawn with this seed"
        else:
            held = selection_mask(class_labels(train, self.label_column, TRAIN), fraction, seed, self.class_names)
            rule = "stratified: this fraction of every class of train (at least 2 per class), drawn with this seed"
        splits = DatasetDict(self.splits)
        splits[TRAIN], splits[SELECTION] = train.select(np.flatnonzero(~held)), train.select(np.flatnonzero(held))
        selection = {
            "rule": rule,
            "fraction": fraction,
            "seed": seed,
            "rows": int(held.sum()),
            "rows_fingerprint": indices_fingerprint(np.flatnonzero(held)),
        }
        return replace(self, splits=splits, info={**self.info, "selection_split": selection})


def prepare_data(
    data_args: DataArguments, image_processor, dataset: DatasetDict | None = None, hub: dict | None = None
) -> PreparedData:
    """The job's :class:`PreparedData`: the data set ``data_args`` names (or ``dataset``, a ``DatasetDict`` of
    ``train`` and ``validation`` already in memory, named in the run summary by ``data_args.dataset_name``), with
    unreadable images left out if asked, the low-shot subset and the evaluation cap applied and every label checked;
    its transforms are ``image_processor``'s. ``hub`` holds ``cache_dir`` and ``token`` for a Hub data set."""
    if dataset is None:
        if data_args.dataset_name is None:
            raise DataError(
                "No data set: pass --dataset_name (a benchmark name, a Hub id, a save_to_disk directory or an image "
                "folder). `hf-probe train` with no arguments at all runs the offline demo instead."
            )
        dataset, image_column, label_column = load_image_dataset(data_args, hub)
    else:
        dataset = DatasetDict(dataset)
        image_column = data_args.image_column_name or detect_image_column(dataset[TRAIN])
        label_column = data_args.label_column_name or detect_label_column(dataset[TRAIN])
    info: dict = {"dataset": data_args.dataset_name, "image_column": image_column, "label_column": label_column}
    multi_label = multi_label_column(dataset[TRAIN], label_column)
    if multi_label is not None and (data_args.shots_per_class is not None or data_args.train_fraction is not None):
        raise DataError(
            f"Column {label_column!r} is multi-label (each image has a set of classes): --shots_per_class and "
            "--train_fraction draw k images of each class, which has no meaning when one image counts for several "
            "classes. Drop them, or subsample the data set yourself before training."
        )
    if data_args.skip_unreadable_images:
        info["skipped_unreadable_images"] = {split: _drop_unreadable(dataset, split, image_column) for split in dataset}
    if data_args.shots_per_class is not None or data_args.train_fraction is not None:
        dataset[TRAIN] = low_shot_subset(
            dataset[TRAIN], label_column, data_args.shots_per_class, data_args.train_fraction, data_args.subset_seed
        )
        info.update(shots_per_class=data_args.shots_per_class, train_fraction=data_args.train_fraction)
    if data_args.max_eval_samples is not None:
        dataset[VALIDATION] = dataset[VALIDATION].select(
            range(min(data_args.max_eval_samples, len(dataset[VALIDATION])))
        )
    if multi_label is None:
        labels = class_names(dataset, label_column)
        check_dataset(dataset, label_column, len(labels))
    else:
        labels = list(multi_label.class_names)
        splits = {split: dataset[split] for split in (TRAIN, VALIDATION) if split in dataset}
        if VALIDATION not in splits:
            raise DataError("The 'validation' split is missing. Check the split names (--eval_split).")
        info["multi_label"] = {
            "encoding": multi_label.encoding,
            "train_images_per_class": check_multi_label_dataset(splits, label_column, multi_label),
        }
    info.update(train_samples=len(dataset[TRAIN]), eval_samples=len(dataset[VALIDATION]))
    return PreparedData(
        dataset, image_column, label_column, labels, image_processor, data_args.eval_resize_ratio, info, multi_label
    )


def _drop_unreadable(dataset: DatasetDict, split: str, image_column: str) -> int:
    bad = find_unreadable_images(dataset[split], image_column)
    if bad:
        logger.warning("Leaving out %d unreadable images of %r: indices %s", len(bad), split, bad[:20])
        dataset[split] = dataset[split].select(sorted(set(range(len(dataset[split]))) - set(bad)))
    return len(bad)
