"""A job's data, loaded and checked once: :func:`prepare_data` -> :class:`PreparedData`.

Every step of a job reads its images or video clips (:meth:`PreparedData.images`) and token caches
(:meth:`PreparedData.token_cache`) through it, so a split never travels without its columns, its label mapping and
its preprocessing. Images and videos are decoded one by one by the package's checked decoders, so an unreadable file
fails with its row and split.

A video data set is read as clips (``PreparedData.clips``, `video.ClipSampling`): live training draws one augmented
clip of each video at a random start; evaluation, selection and the token cache read ``clips_per_video`` clips spread
evenly over each video. The cache holds one row per clip; training from it reads every clip as a sample of its
video's class, and the selection and evaluation splits read the clips of a video together (``[K, ...]``), the probe
averaging its logits over them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Any

import datasets
import numpy as np
import torch
from datasets import DatasetDict

from ..backbones import VIDEO_FAMILIES
from ..cache import CachedSplit, ExtractionOptions, TokenCacheView, cache_tokens_for_model, dataset_fingerprint
from ..cache.streaming import extract_stream
from ..images import ImageDecodeError, decode_image
from ..video import ClipSampling, VideoDecodeError, decode_clips
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
    find_unreadable,
    is_video_column,
    load_image_dataset,
    low_shot_subset,
    undecoded,
)
from .episodes import Episode, draw_episodes
from .multilabel import (
    MULTI_LABEL_PROBLEM,
    MultiLabelColumn,
    check_multi_label_dataset,
    multi_label_column,
    multi_label_selection_mask,
)
from .selection import (
    HASH_RULE,
    SELECTION_PREFIX,
    SELECTION_RULES,
    STRATIFIED_RULE,
    hash_selection_mask,
    ids_fingerprint,
    image_id,
    indices_fingerprint,
    selection_mask,
)
from .streaming import StreamedImages, StreamedSplit, stream_split
from .transforms import (
    EVAL_RESIZE_RATIO,
    ClipTransform,
    ProcessorTransform,
    TrainingClipTransform,
    evaluation_processor,
    evaluation_video_processor,
    training_transform,
)

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


class VideoClassificationDataset(torch.utils.data.Dataset):
    """A `datasets` split of videos seen as ``{"pixel_values", "labels"}`` items of clips ``[T, 3, H, W]``, decoded
    (only the frames the clips need) and transformed on access.

    With a :class:`~.transforms.TrainingClipTransform` an item is one augmented clip at a random start. Otherwise
    the ``clips_per_video`` evenly spread clips of a video through the eval ``transform``: one item per video
    (``[K, T, 3, H, W]``, or ``[T, 3, H, W]`` for one clip), or with ``per_clip`` one item per clip (row
    ``video * K + clip``: what a token cache holds). A video that cannot be read fails with its row and file.
    """

    def __init__(self, dataset, column: str, label_column: str, clips: ClipSampling, transform: Callable, **where):
        self.dataset, self.column, self.label_column = undecoded(dataset, column), column, label_column
        self.clips, self.transform = clips, transform
        self.split, self.per_clip = where.get("split", ""), where.get("per_clip", False)
        self._decoded: tuple[int, torch.Tensor] | None = None  # the last video's clips: a cache reads them in turn

    def __len__(self) -> int:
        return len(self.dataset) * (self.clips.clips_per_video if self.per_clip else 1)

    def __getitem__(self, index: int) -> dict:
        video, clip = divmod(index, self.clips.clips_per_video) if self.per_clip else (index, None)
        row = self.dataset[video]
        if isinstance(self.transform, TrainingClipTransform):
            seed = int(torch.randint(2**62, (1,)))  # the Trainer seeds torch (and each DataLoader worker)
            clips = self._decode(row, video, 1, torch.Generator().manual_seed(seed))
            return {"pixel_values": self.transform(clips[0]), "labels": int(row[self.label_column])}
        if self._decoded is None or self._decoded[0] != video:
            self._decoded = (video, self.transform(self._decode(row, video, self.clips.clips_per_video)))
        clips = self._decoded[1]
        pixel_values = clips[clip] if clip is not None else clips[0] if len(clips) == 1 else clips
        return {"pixel_values": pixel_values, "labels": int(row[self.label_column])}

    def _decode(self, row: dict, video: int, num_clips: int, generator: torch.Generator | None = None) -> torch.Tensor:
        value = row[self.column]
        name = value.get("path") if isinstance(value, dict) else None
        where = f"the video at index {video} of the {self.split or 'data'} split (column {self.column!r}"
        where += f", {name})" if name else ")"
        clips = self.clips
        try:
            return decode_clips(value, clips.frames_per_clip, clips.frame_stride, num_clips, generator, where)
        except VideoDecodeError as error:  # a data set's error, as every other one of a training run
            raise DataError(f"{error} (--skip_unreadable leaves such videos out.)") from error


class ClipGroups(torch.utils.data.Dataset):
    """Rows of a per-clip data set (a token cache of ``clips_per_video`` rows a video) read a video at a time:
    ``{"tokens": [K, N, C], "labels"}``, which a probe classifies by the mean of its logits over the K clips."""

    def __init__(self, clip_rows, clips_per_video: int):
        if len(clip_rows) % clips_per_video:
            raise ValueError(f"{len(clip_rows)} rows are not whole videos of {clips_per_video} clips.")
        self.clip_rows, self.clips_per_video = clip_rows, clips_per_video

    def __len__(self) -> int:
        return len(self.clip_rows) // self.clips_per_video

    def __getitem__(self, index: int) -> dict:
        rows = [self.clip_rows[index * self.clips_per_video + clip] for clip in range(self.clips_per_video)]
        return {"tokens": torch.stack([row["tokens"] for row in rows]), "labels": rows[0]["labels"]}


def probing_collator(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack a batch of ``pixel_values`` (images or clips, ``[K, ...]`` for K clips of a video) or ``tokens`` (cached
    backbone tokens, ``[K, N, C]`` for K clips) with their ``labels``: class indices (int64), or multi-hot vectors
    (float32, ``[B, C]``) for a multi-label data set."""
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
    :meth:`hold_out_selection` has split it off ``train``: `datasets.Dataset`s, or with ``--streaming``
    `training.streaming.StreamedSplit`s. ``info`` describes the data for the run summary.
    ``multi_label``: how the label column encodes each image's set of classes (`training.multilabel`); ``None``
    when each image has one class. ``clips`` is how clips are taken from a video data set (``None`` for images).
    """

    splits: DatasetDict | dict[str, StreamedSplit]
    image_column: str
    label_column: str
    class_names: list[str]
    image_processor: Any
    eval_resize_ratio: float = EVAL_RESIZE_RATIO
    info: dict = field(default_factory=dict)
    multi_label: MultiLabelColumn | None = None
    clips: ClipSampling | None = None

    @property
    def is_video(self) -> bool:
        return self.clips is not None

    @property
    def streaming(self) -> bool:
        return isinstance(self.splits[TRAIN], StreamedSplit)

    @property
    def num_labels(self) -> int:
        return len(self.class_names)

    def num_training_samples(self, cached: bool) -> int:
        """The samples an epoch trains on (what the recipe sizes its batch and epochs by): the training images; for
        videos every cached clip (each a sample of its video's class), or one clip a video when the backbone runs
        live."""
        count = len(self.splits[TRAIN])
        return count * self.clips.clips_per_video if self.is_video and cached else count

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
        what the cache, selection and evaluation see, and what is saved beside every probe (a video processor for
        a video data set: `training.transforms.evaluation_video_processor`)."""
        if self.is_video:
            return evaluation_video_processor(self.image_processor, self.eval_resize_ratio)
        return evaluation_processor(self.image_processor, self.eval_resize_ratio)

    @cached_property
    def eval_transform(self) -> Callable:
        return ClipTransform(self.eval_processor) if self.is_video else ProcessorTransform(self.eval_processor)

    def train_transform(self, crop_scale: tuple[float, float]) -> Callable:
        """RandomResizedCrop over ``crop_scale`` + horizontal flip, normalised: live training's augmentation (for a
        video, one crop and flip for every frame of a clip drawn at a random start)."""
        if self.is_video:
            return TrainingClipTransform(self.image_processor, crop_scale)
        return training_transform(self.image_processor, crop_scale)

    def images(self, split: str, transform: Callable | None = None, per_clip: bool = False) -> torch.utils.data.Dataset:
        """``split`` as ``{"pixel_values", "labels"}`` items, through ``transform`` (default: the eval transform):
        images, or a video data set's clips (see :class:`VideoClassificationDataset`; ``per_clip``: one item per
        evaluation clip, as the token cache holds them). A streamed split (`training.streaming.StreamedImages`) read
        through a transform of its own (live training's augmentation) is shuffled every epoch."""
        if self.streaming:
            shuffle_seed = 0 if transform is not None else None
            return StreamedImages(self.splits[split], transform or self.eval_transform, split, shuffle_seed)
        transform = transform or self.eval_transform
        columns = (self.splits[split], self.image_column, self.label_column)
        if self.is_video:
            return VideoClassificationDataset(*columns, self.clips, transform, split=split, per_clip=per_clip)
        return ImageClassificationDataset(*columns, transform, split, self.multi_label)

    def cached_split(self, split: str) -> CachedSplit:
        """What a token cache of ``split`` holds on the data side: rows, columns, label mapping, preprocessing (for
        videos with the clip sampling: one row per clip)."""
        preprocessing = self.eval_processor.to_json_string()
        if self.is_video:
            preprocessing = json.dumps({"video_processor": preprocessing, "clips": asdict(self.clips)})
        return CachedSplit(
            dataset=dataset_fingerprint(self.splits[split]),
            split=split,
            preprocessing=preprocessing,
            image_column=self.image_column,
            label_column=self.label_column,
            label_names=tuple(self.class_names),
        )

    def token_cache(self, split: str, model, options: ExtractionOptions | None = None, **storage) -> TokenCacheView:
        """The cached tokens of ``split`` that ``model``'s token reader reads (or ``reader=``'s, other layers or tokens
        of the same backbone), images (or every evaluation clip of every video) through the eval transform; the
        layers no cache of this split holds yet are extracted first, in one pass. ``storage``: ``storage=(storage
        dtype, compute dtype)`` and ``reader`` of `cache.cache_tokens_for_model`."""
        rows = self.images(split, per_clip=True)
        extract = {"extract": extract_stream} if self.streaming else {}
        return cache_tokens_for_model(model, rows, self.cached_split(split), options, **storage, **extract)

    def cached_examples(self, cache: TokenCacheView, split: str) -> torch.utils.data.Dataset:
        """The rows of ``split``'s token cache as a probe reads them: one per image; for videos one per clip in
        ``train`` (each a sample of its video's class) and the clips of a video together elsewhere
        (:class:`ClipGroups`: selection and evaluation average the logits of a video's clips)."""
        rows = cache.dataset()
        if not self.is_video or split == TRAIN or self.clips.clips_per_video == 1:
            return rows
        return ClipGroups(rows, self.clips.clips_per_video)

    def hold_out_selection(self, fraction: float, seed: int = 0, rule: str | None = None) -> PreparedData:
        """The same data with ``fraction`` of ``train`` moved to a ``selection`` split: what learning rate, layer and
        epoch are chosen on. ``rule``: ``stratified`` (a seeded draw from every class,
        `training.selection.selection_mask`; the default) or ``hash`` (the same counts, by a seeded hash of each
        image's bytes, `training.selection.hash_selection_mask`: the default and only rule of a stream, and the same
        images streamed or loaded). ``info`` records the rule and which rows it held out (by index; by image id under
        the hash rule)."""
        rule = rule or ("hash" if self.streaming else "stratified")
        if rule not in SELECTION_RULES:
            raise DataError(f"Unknown --selection_rule {rule!r}; choose one of {SELECTION_RULES}.")
        if rule == "hash":
            return self._hold_out_by_hash(fraction, seed)
        if self.streaming:
            raise DataError("--selection_rule stratified cannot draw from a stream: use --selection_rule hash.")
        train = self.splits[TRAIN]
        if self.multi_label:
            held = multi_label_selection_mask(len(train), fraction, seed)
            rule = "random, not stratified (an image has several classes): this fraction of train, drawn with this seed"
        else:
            held = selection_mask(class_labels(train, self.label_column, TRAIN), fraction, seed, self.class_names)
            rule = STRATIFIED_RULE
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

    def _hold_out_by_hash(self, fraction: float, seed: int) -> PreparedData:
        """:meth:`hold_out_selection` by the hash rule, on a stream or on a data set loaded whole."""
        if self.multi_label:
            raise DataError("--selection_rule hash draws per class; this data set is multi-label: drop the flag.")
        train, splits = self.splits[TRAIN], dict(self.splits)
        if self.streaming:
            splits[TRAIN], splits[SELECTION] = train.hold_out(fraction, seed, self.class_names)
            held_ids = splits[SELECTION].ids
        else:
            ids = np.asarray([image_id(value) for value in _stored_images(train, self.image_column)], np.uint64)
            labels = class_labels(train, self.label_column, TRAIN)
            held = hash_selection_mask(ids, labels, fraction, seed, self.class_names)
            splits = DatasetDict(splits)
            splits[TRAIN], splits[SELECTION] = train.select(np.flatnonzero(~held)), train.select(np.flatnonzero(held))
            held_ids = ids[held]
        selection = {
            "rule": HASH_RULE,
            "method": "hash",
            "fraction": fraction,
            "seed": seed,
            "rows": len(held_ids),
            "rows_fingerprint": ids_fingerprint(held_ids),
        }
        return replace(self, splits=splits, info={**self.info, "selection_split": selection})


def _stored_images(dataset: datasets.Dataset, image_column: str, batch_size: int = 256):
    """Every image of ``dataset`` as stored (bytes or path), batch by batch: never the whole column in memory."""
    for batch in undecoded(dataset, image_column).select_columns([image_column]).iter(batch_size=batch_size):
        yield from batch[image_column]


def with_episodes(data: PreparedData, data_args: DataArguments) -> tuple[PreparedData, list[Episode]]:
    """``data`` with ``train`` cut to the union of every low-shot episode's rows (`training.episodes`), and the
    episodes; ``info`` records each one's seed, selection rule and rows."""
    train = data.splits[TRAIN]
    union, episodes = draw_episodes(
        class_labels(train, data.label_column, TRAIN),
        data_args.shots_per_class,
        data_args.episodes,
        data_args.subset_seed,
        data_args.selection_fraction,
        data.class_names,
    )
    splits = DatasetDict(data.splits)
    splits[TRAIN] = train.select(union)
    records = [episode.record(union) for episode in episodes]
    return replace(data, splits=splits, info={**data.info, "episodes": records}), episodes


def prepare_data(
    data_args: DataArguments,
    image_processor,
    dataset: DatasetDict | None = None,
    hub: dict | None = None,
    clips: ClipSampling | None = None,
) -> PreparedData:
    """The job's :class:`PreparedData`: the data set ``data_args`` names (or ``dataset``, a ``DatasetDict`` of
    ``train`` and ``validation`` already in memory, named in the run summary by ``data_args.dataset_name``), with
    unreadable images (or videos) left out if asked, the low-shot subset and the evaluation cap applied and every
    label checked; its transforms are ``image_processor``'s (a video backbone's image or video processor). ``clips``
    is how a video backbone takes clips (``None``: the backbone reads images); a video data set for an image backbone,
    or the reverse, fails here. ``hub`` holds ``cache_dir`` and ``token`` for a Hub data set."""
    if dataset is None:
        if data_args.dataset_name is None:
            raise DataError(
                "No data set: pass --dataset_name (a benchmark name, a Hub id, a save_to_disk directory, or an image "
                "or video folder). `hf-probe train` with no arguments at all runs the offline demo instead."
            )
        dataset, image_column, label_column = load_image_dataset(data_args, hub)
        if data_args.streaming:
            return prepare_streamed(data_args, image_processor, (dataset, image_column, label_column), clips)
    else:
        dataset = DatasetDict(dataset)
        image_column = data_args.image_column_name or detect_image_column(dataset[TRAIN])
        label_column = data_args.label_column_name or detect_label_column(dataset[TRAIN])
    check_modality(dataset[TRAIN], image_column, clips)
    info: dict = {"dataset": data_args.dataset_name, "image_column": image_column, "label_column": label_column}
    multi_label = multi_label_column(dataset[TRAIN], label_column)
    if multi_label is not None and (data_args.shots_per_class is not None or data_args.train_fraction is not None):
        raise DataError(
            f"Column {label_column!r} is multi-label (each image has a set of classes): --shots_per_class and "
            "--train_fraction draw k images of each class, which has no meaning when one image counts for several "
            "classes. Drop them, or subsample the data set yourself before training."
        )
    if clips is not None:
        info["clips"] = {**asdict(clips), "sampling": clips.describe()}
    if data_args.skip_unreadable or data_args.skip_unreadable_images:
        skipped = {split: _drop_unreadable(dataset, split, image_column, clips) for split in dataset}
        info["skipped_unreadable_videos" if clips is not None else "skipped_unreadable_images"] = skipped
    if data_args.episodes is not None:  # the episodes draw their own subsets (`with_episodes`)
        info.update(shots_per_class=data_args.shots_per_class, episodes=data_args.episodes)
    elif data_args.shots_per_class is not None or data_args.train_fraction is not None:
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
        dataset,
        image_column,
        label_column,
        labels,
        image_processor,
        data_args.eval_resize_ratio,
        info,
        multi_label,
        clips,
    )


def prepare_streamed(data_args: DataArguments, image_processor, loaded: tuple, clips=None) -> PreparedData:
    """:func:`prepare_data` of ``--streaming``: ``loaded`` is `training.data.load_image_dataset`'s streams and
    columns; each split is counted once (`training.streaming.stream_split`), the evaluation cap is a ``take``. Video
    data sets are refused (images only)."""
    streams, image_column, label_column = loaded
    if clips is not None or is_video_column(streams[TRAIN], image_column):
        raise DataError("--streaming reads image data sets only; video data cannot be streamed yet: drop --streaming.")
    if data_args.max_eval_samples is not None:
        streams[VALIDATION] = streams[VALIDATION].take(data_args.max_eval_samples)
    splits = {split: stream_split(streams[split], image_column, label_column) for split in (TRAIN, VALIDATION)}
    labels = class_names(splits, label_column)
    check_dataset(splits, label_column, len(labels))
    info = {
        "dataset": data_args.dataset_name,
        "image_column": image_column,
        "label_column": label_column,
        "streaming": {"processes": len(splits[TRAIN].part_sizes)},
        "train_samples": len(splits[TRAIN]),
        "eval_samples": len(splits[VALIDATION]),
    }
    return PreparedData(splits, image_column, label_column, labels, image_processor, data_args.eval_resize_ratio, info)


def check_modality(train: datasets.Dataset, column: str, clips: ClipSampling | None) -> None:
    """A video data set for an image backbone, or images for a video backbone, fail before anything runs."""
    videos = is_video_column(train, column)
    if videos and clips is None:
        raise DataError(
            f"Column {column!r} holds videos, but the backbone reads images. Probe videos with a video backbone "
            f"({', '.join(VIDEO_FAMILIES)}), read them frame by frame through this image backbone "
            "(--frames_per_clip N), or give the frames as an image data set."
        )
    if clips is not None and not videos:
        feature = type(train.features.get(column)).__name__
        raise DataError(
            f"The run reads video clips, but column {column!r} holds {feature} values, not videos. Give a data "
            "set with a datasets.Video column (or a folder of video files: train/<class>/*.mp4 and "
            "validation/<class>/*.mp4), cast a column of video paths with "
            f"`dataset.cast_column({column!r}, datasets.Video())`, or probe images with an image backbone (without "
            "--frames_per_clip)."
        )


def _drop_unreadable(dataset: DatasetDict, split: str, column: str, clips: ClipSampling | None) -> int:
    bad = find_unreadable(dataset[split], column, clips)
    if bad:
        what = "videos (undecodable, or too short for one clip)" if clips is not None else "images"
        logger.warning("Leaving out %d unreadable %s of %r: indices %s", len(bad), what, split, bad[:20])
        dataset[split] = dataset[split].select(sorted(set(range(len(dataset[split]))) - set(bad)))
    return len(bad)
