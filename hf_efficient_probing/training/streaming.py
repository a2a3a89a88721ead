"""Streaming data sets (``--streaming``): a split read as a `datasets.IterableDataset`, nothing downloaded first.

One pass over each split's stored rows (labels and image bytes; no image is decoded) counts its rows and gives each
image its id (`training.selection.image_id`); the selection split is then drawn by the hash rule
(`training.selection.hash_selection_mask`), and a row's side is known from its id as it streams by. Each process
reads its own part (`datasets.distributed.split_dataset_by_node`), in that pass and in the extraction, so a split's
rows are the processes' parts one after the other: with one process, the data set's own order (the rows, in their
order, of the data set loaded whole). :class:`StreamedSplit` is a split; :class:`StreamedImages` its decoded,
transformed items, for the token cache (`cache.streaming`) and live training.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import datasets
import numpy as np
import torch
from datasets import Image as ImageFeature
from datasets.distributed import split_dataset_by_node

from ..cache.extraction import process_slot
from ..images import ImageDecodeError, decode_image
from .data import DataError
from .selection import hash_selection_mask, image_id

MAX_DECODE_THREADS = 8
SHUFFLE_BUFFER = 10_000  # rows a live-training stream shuffles among (datasets' buffer shuffle)


@dataclass(frozen=True)
class HeldSide:
    """Which side of the hash rule a split keeps: the rows whose image id is in ``ids`` (``held``), or the others."""

    ids: frozenset
    held: bool

    def __call__(self, row: dict, image_column: str) -> bool:
        return (image_id(row[image_column]) in self.ids) == self.held


@dataclass(frozen=True)
class StreamedSplit:
    """One split as a stream: the `datasets.IterableDataset` (its images left as stored bytes), its columns, the ids
    and labels of its rows (the processes' parts one after the other), each part's number of rows, and, for a side
    of the hash rule, that side.

    It answers what a job asks of a split without a pass: its length, its label column, its first rows, and a
    fingerprint of exactly the rows it holds, in their order and parts (the token cache's key)."""

    stream: datasets.IterableDataset
    image_column: str
    label_column: str
    ids: np.ndarray
    labels: np.ndarray
    part_sizes: tuple[int, ...]
    side: HeldSide | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def _fingerprint(self) -> str:
        parts = np.asarray(self.part_sizes, dtype=np.int64).tobytes()
        digest = hashlib.sha256(b"stream|" + parts + self.ids.astype(np.uint64).tobytes() + self.labels.tobytes())
        return "stream-" + digest.hexdigest()[:16]

    @property
    def column_names(self) -> list[str]:
        return [self.image_column, self.label_column]

    @property
    def features(self) -> datasets.Features:
        return self.stream.features or datasets.Features()

    def __getitem__(self, key):
        """The label column (``split[label_column]``), or row ``key`` as stored (a first row: it reads up to it)."""
        if key == self.label_column:
            return self.labels.tolist()
        if isinstance(key, int) and 0 <= key < len(self):
            return next(row for index, row in enumerate(self.part(0, 1)) if index == key)
        raise KeyError(f"A streamed split gives its label column {self.label_column!r} and its rows; not {key!r}.")

    def part_rows(self, rank: int, world_size: int) -> int:
        """How many rows process ``rank`` of ``world_size`` reads (counted by :func:`stream_split`)."""
        if world_size != len(self.part_sizes):
            raise RuntimeError(
                f"The stream was counted on {len(self.part_sizes)} processes and is read on {world_size}: run the "
                "same number of processes from loading to extraction."
            )
        return self.part_sizes[rank]

    def part(self, rank: int, world_size: int) -> datasets.IterableDataset:
        """The rows process ``rank`` of ``world_size`` reads: its `split_dataset_by_node` part, then this split's side
        of the hash rule (filtered after the split, so that a part's rows never depend on the other parts)."""
        stream = split_dataset_by_node(self.stream, rank, world_size) if world_size > 1 else self.stream
        if self.side is None:
            return stream
        side, column = self.side, self.image_column
        return stream.filter(lambda row: side(row, column))

    def hold_out(self, fraction: float, seed: int, class_names) -> tuple[StreamedSplit, StreamedSplit]:
        """``(train, selection)`` by the hash rule (`training.selection.hash_selection_mask`), with their rows."""
        held = hash_selection_mask(self.ids, self.labels, fraction, seed, class_names)
        ids = frozenset(self.ids[held].tolist())
        bounds = np.cumsum((0, *self.part_sizes))
        sides = []
        for keep, side in ((~held, HeldSide(ids, False)), (held, HeldSide(ids, True))):
            sizes = tuple(int(keep[start:end].sum()) for start, end in zip(bounds[:-1], bounds[1:], strict=True))
            sides.append(replace(self, ids=self.ids[keep], labels=self.labels[keep], part_sizes=sizes, side=side))
        return sides[0], sides[1]


def stream_split(stream: datasets.IterableDataset, image_column: str, label_column: str) -> StreamedSplit:
    """A :class:`StreamedSplit` of ``stream``, counted: every process reads its part's labels and image bytes once
    (no image decoded) and the parts are gathered, in rank order."""
    if isinstance((stream.features or {}).get(image_column), ImageFeature):
        stream = stream.cast_column(image_column, ImageFeature(decode=False))
    rank, world_size = process_slot()
    split = StreamedSplit(stream, image_column, label_column, np.zeros(0, np.uint64), np.zeros(0, np.int64), ())
    ids, labels = [], []
    for row in split.part(rank, world_size):
        ids.append(image_id(row[image_column]))
        labels.append(row[label_column])
    parts = [(ids, labels)]
    if world_size > 1:
        parts = [None] * world_size
        torch.distributed.all_gather_object(parts, (ids, labels))
    labels = [label for part in parts for label in part[1]]
    bad = next((label for label in labels if not isinstance(label, (int, np.integer)) or isinstance(label, bool)), None)
    if bad is not None:
        raise DataError(
            f"Column {label_column!r} holds {type(bad).__name__} labels (e.g. {bad!r}), not class indices: --streaming "
            "reads single-label data sets with a ClassLabel (or integer) label column; multi-label data cannot be "
            "streamed yet."
        )
    return replace(
        split,
        ids=np.asarray([i for part in parts for i in part[0]], dtype=np.uint64),
        labels=np.asarray(labels, dtype=np.int64),
        part_sizes=tuple(len(part[0]) for part in parts),
    )


def decode_threads() -> int:
    """Threads decoding a stream's images (PIL and the transforms release the GIL): this process's share of cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_DECODE_THREADS, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def ordered_map(function: Callable, items, threads: int) -> Iterator:
    """``map(function, items)`` on ``threads`` threads, in order, with a bounded number of items in flight."""
    if threads <= 1:
        yield from map(function, items)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="stream-decode") as pool:
        pending = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= 4 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class StreamedImages(torch.utils.data.IterableDataset):
    """A :class:`StreamedSplit`'s rows as ``{"pixel_values", "labels"}`` items, decoded on threads in order.

    :meth:`part` is what one process extracts (`cache.streaming`); iterating gives the whole split (live training:
    the Trainer's accelerate hands each process its batches), shuffled in a buffer when ``shuffle_seed`` is set, anew
    every epoch (:meth:`set_epoch`)."""

    def __init__(self, split: StreamedSplit, transform: Callable, name: str, shuffle_seed: int | None = None):
        self.split, self.transform, self.name, self.shuffle_seed = split, transform, name, shuffle_seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.split)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def part_rows(self, rank: int, world_size: int) -> int:
        return self.split.part_rows(rank, world_size)

    def _item(self, row: dict) -> dict:
        where = f"an image of the streamed {self.name} split (column {self.split.image_column!r})"
        try:
            image = decode_image(row[self.split.image_column], where)
        except ImageDecodeError as error:
            raise DataError(str(error)) from error
        return {"pixel_values": self.transform(image), "labels": int(row[self.split.label_column])}

    def part(self, rank: int, world_size: int, start: int = 0) -> Iterator[dict]:
        """Process ``rank``'s items from its ``start``-th on (the rows before it are read, not decoded)."""
        rows = self.split.part(rank, world_size)
        return ordered_map(self._item, rows.skip(start) if start else rows, decode_threads())

    def __iter__(self) -> Iterator[dict]:
        if torch.utils.data.get_worker_info() is not None:
            raise DataError(
                "A streamed split decodes on threads of its own; DataLoader workers would each read all of it. "
                "Pass --dataloader_num_workers 0 with --streaming."
            )
        if self.shuffle_seed is None:
            return self.part(0, 1)
        rows = self.split.part(0, 1).shuffle(seed=self.shuffle_seed, buffer_size=SHUFFLE_BUFFER)
        rows.set_epoch(self.epoch)
        return ordered_map(self._item, rows, decode_threads())
