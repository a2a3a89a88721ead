"""Multi-label data sets: a label column that gives each image a set of classes (any number, none included).

Two column types say so without guessing: a list of class indices with the class names
(``datasets.Sequence(ClassLabel(names=...))``, shown as ``List(ClassLabel(...))`` by `datasets` 4 and later), or a
multi-hot vector (a list of floats or booleans, or of integers with a fixed ``length``: one entry per class). A list
of integers of no fixed length could be either, so it is an error that shows both casts. Every label becomes a
float32 multi-hot vector: what the binary cross-entropy of the probes reads, and what the token cache stores.

The split held out for selection cannot be stratified class by class (an image belongs to several classes at
once): :func:`multi_label_selection_mask` draws a seeded random fraction of the images, and the run records that rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import datasets
import numpy as np
from datasets import ClassLabel, LargeList, List, Value

from .data import DataError

MULTI_LABEL_PROBLEM = "multi_label_classification"  # `transformers`' problem_type: sigmoid + BCE, per class
MULTI_LABEL_METRICS = ("map", "micro_map")  # scored every epoch; the first is what the grid and rungs select on
_FLOAT_TYPES = ("float16", "float32", "float64", "bool")
_INT_TYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


@dataclass(frozen=True)
class MultiLabelColumn:
    """How a multi-label column encodes each image's classes: ``indices`` (a list of class indices) or a multi-hot
    ``vector`` of ``len(class_names)`` entries."""

    encoding: str
    class_names: tuple[str, ...]

    @property
    def num_labels(self) -> int:
        return len(self.class_names)

    def multi_hot(self, value, where: str = "") -> np.ndarray:
        """One image's label as a float32 multi-hot vector, checked (``where`` names the row in errors)."""
        values = np.asarray(value if value is not None else [], dtype=np.float64).reshape(-1)
        vector = np.zeros(self.num_labels, dtype=np.float32)
        if self.encoding == "indices":
            if values.size and (values.min() < 0 or values.max() >= self.num_labels or np.any(values % 1)):
                raise DataError(f"{where}: class indices {values.tolist()} outside [0, {self.num_labels}).")
            vector[values.astype(np.int64)] = 1.0
            return vector
        if values.size != self.num_labels or not np.all((values == 0) | (values == 1)):
            raise DataError(
                f"{where}: a multi-hot label must have {self.num_labels} entries of 0 or 1 (one per class), got "
                f"{values.tolist()[:10]}{' ...' if values.size > 10 else ''}."
            )
        return values.astype(np.float32)


def multi_label_column(dataset: datasets.Dataset, label_column: str) -> MultiLabelColumn | None:
    """The encoding of ``label_column`` when it is multi-label (see the module), ``None`` when it holds one class per
    image; an ambiguous or unusable list column is a :class:`DataError` saying how to cast it."""
    feature = dataset.features.get(label_column)
    if not isinstance(feature, (List, LargeList)):
        return None
    inner, length = feature.feature, getattr(feature, "length", -1)
    if isinstance(inner, ClassLabel):
        if inner.num_classes < 1:
            raise DataError(f"Column {label_column!r} is a list of ClassLabel with no class names.")
        return MultiLabelColumn("indices", tuple(inner.names))
    if isinstance(inner, Value) and (inner.dtype in _FLOAT_TYPES or (inner.dtype in _INT_TYPES and length > 0)):
        width = length if length > 0 else _common_length(dataset, label_column)
        return MultiLabelColumn("vector", tuple(str(i) for i in range(width)))
    raise DataError(
        f"Column {label_column!r} holds lists ({feature}), which could be class indices or multi-hot vectors. "
        "Say which: class indices with `dataset.cast_column(column, datasets.Sequence(datasets.ClassLabel(names="
        "class_names)))`, or multi-hot vectors with `datasets.Sequence(datasets.Value('float32'), "
        "length=num_classes)`."
    )


def _common_length(dataset: datasets.Dataset, label_column: str) -> int:
    lengths = {len(value) for value in dataset[label_column] if value is not None}
    if len(lengths) != 1:
        raise DataError(
            f"Column {label_column!r} holds multi-hot vectors of different lengths {sorted(lengths)[:10]}: every "
            "vector needs one entry per class."
        )
    return lengths.pop()


def multi_label_matrix(dataset: datasets.Dataset, label_column: str, column: MultiLabelColumn, split: str):
    """``[rows, C]`` float32 multi-hot labels of ``split``, every row checked."""
    rows = [
        column.multi_hot(value, f"Row {index} of split {split!r} (column {label_column!r})")
        for index, value in enumerate(dataset[label_column])
    ]
    return np.stack(rows) if rows else np.zeros((0, column.num_labels), dtype=np.float32)


def check_multi_label_dataset(splits: dict, label_column: str, column: MultiLabelColumn) -> dict:
    """Fail clearly on a split that is empty or whose labels do not fit ``column``, and on a training split where no
    image has any class; returns how often each class occurs in train (for the run summary)."""
    if column.num_labels < 2:
        raise DataError(
            f"Column {label_column!r} names {column.num_labels} class: a multi-label probe needs at least two (for "
            "one yes/no class, use a ClassLabel with two names)."
        )
    counts = {}
    for split, dataset in splits.items():
        if len(dataset) == 0:
            raise DataError(f"The {split!r} split is empty. Check the split names and the data directory.")
        if multi_label_column(dataset, label_column) != column:
            raise DataError(
                f"Column {label_column!r} of split {split!r} is {dataset.features.get(label_column)}, unlike the "
                f"training split's: cast every split to the same feature."
            )
        counts[split] = multi_label_matrix(dataset, label_column, column, split).sum(0)
    train = counts["train"]
    if not train.any():
        raise DataError(f"No training image has a class in column {label_column!r}: there is nothing to learn.")
    return {name: int(count) for name, count in zip(column.class_names, train, strict=True)}


def multi_label_selection_mask(num_rows: int, fraction: float, seed: int = 0) -> np.ndarray:
    """A seeded random ``fraction`` of the rows (at least one, leaving at least one): the multi-label selection
    split. Not stratified per class: the run summary names the rule and each class's count in the split."""
    if not 0 < fraction < 1:
        raise DataError(f"--selection_fraction must be in (0, 1), got {fraction}.")
    if num_rows < 2:
        raise DataError(f"The training split has {num_rows} image(s): none could be held out to choose the probe.")
    count = min(max(1, round(fraction * num_rows)), num_rows - 1)
    held = np.zeros(num_rows, dtype=bool)
    held[np.random.default_rng(seed).permutation(num_rows)[:count]] = True
    return held
