"""What a token cache will cost before it is extracted: images, tokens, disk per storage type and layer choice, and
the extraction time predicted from a short run of the backbone on this machine.

    python -m hf_efficient_probing.cache.plan --model_name_or_path facebook/dinov2-small \\
        --dataset_name ./my_images [--feature_layers -1] [--backbone_dtype auto] [--num_processes 8]

The data set is counted without downloading it (a Hub data set's split sizes come from its metadata; a local image
or video folder's files are counted), and the timing runs the backbone on random images at its input size: decoding
and transforms run in DataLoader workers beside the backbone, so the backbone is what an extraction waits for. A
video backbone is priced per clip (a cache row): ``--clips_per_video`` clips of every video, each of
``--frames_per_clip`` frames (default: the backbone's own), timed on random clips; so is an image backbone given
``--frames_per_clip``, which reads them frame by frame.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..backbones import (
    State,
    TokenReader,
    backbone_family,
    has_cls_token,
    load_backbone,
    native_image_size,
    vision_config,
)
from ..video import VIDEO_SUFFIXES
from .key import COMPUTE_DTYPES, resolve_compute_dtype
from .quantization import token_storage

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLIT_FOLDERS = ("train", "validation", "val", "test")
STORAGE_COLUMNS = {"float16 / bfloat16": "float16", "float32": "float32", "float8": "float8", "int8": "int8"}
LABEL_BYTES = 8  # an int64 label per row


def count_images(dataset_name: str, config_name: str | None = None) -> dict[str, int]:
    """Images per split: a local folder's image files (per split folder when it has them), else the split sizes a
    Hub data set's metadata records."""
    folder = Path(dataset_name)
    if folder.is_dir():
        splits = [folder / name for name in SPLIT_FOLDERS if (folder / name).is_dir()] or [folder]
        return {
            split.name if split != folder else "train": sum(
                path.suffix.lower() in IMAGE_SUFFIXES | set(VIDEO_SUFFIXES)
                for path in split.rglob("*")
                if path.is_file()
            )
            for split in splits
        }
    import datasets

    splits = datasets.load_dataset_builder(dataset_name, config_name).info.splits
    if not splits:
        raise ValueError(f"{dataset_name!r} does not record its split sizes; pass --num_images.")
    return {name: split.num_examples for name, split in splits.items()}


@dataclass
class Measurement:
    images_per_second: float
    compute_dtype: str
    num_prefix_tokens: int
    num_patches: int


def plan_reader(config, feature_layers, frame_by_frame: bool = False) -> TokenReader:
    """The reader of ``feature_layers`` with every token the backbone has ([CLS] too, when it has one): the most a
    cache of these layers can hold (of clips read frame by frame, with ``frame_by_frame``). It fails, listing the
    backbone's states, for layers out of range or of different widths or grids."""
    selection = "all" if has_cls_token(config) else "patch"
    return TokenReader(config, feature_layers, token_selection=selection, frame_by_frame=frame_by_frame)


@torch.inference_mode()
def measure_extraction(
    backbone,
    reader: TokenReader,
    image_size: tuple[int, int],
    batch_size: int,
    batches: int,
    compute_dtype: str,
    frames_per_clip: int | None = None,
) -> Measurement:
    """Images/s (clips/s of ``frames_per_clip`` frames for a video backbone) of the backbone through ``reader`` on
    random inputs of ``image_size``, after a warm-up."""
    device = next(backbone.parameters()).device
    compute_dtype = resolve_compute_dtype(compute_dtype, device)
    frames = (frames_per_clip,) if frames_per_clip else ()
    images = torch.randn(batch_size, *frames, getattr(backbone.config, "num_channels", 3), *image_size, device=device)
    backbone.eval()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=compute_dtype == "bfloat16"):
        read = reader(backbone, images)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(batches):
            reader(backbone, images).tokens.cpu()
        seconds = time.perf_counter() - start
    num_tokens = read.tokens.shape[1]
    return Measurement(
        batch_size * batches / seconds, compute_dtype, read.num_prefix_tokens, num_tokens - read.num_prefix_tokens
    )


def bytes_per_image(num_prefix: int, num_patches: int, width: int, num_layers: int, token_dtype: str) -> int:
    """What one image costs in a cache's shards: ``num_layers`` layers of its tokens in ``token_dtype`` (values,
    per-token parameters, an 8-bit type's float16 prefix tokens), and its label (each shard adds a header of a few
    hundred bytes)."""
    return num_layers * token_storage(token_dtype).bytes_per_row(num_prefix, num_patches, width) + LABEL_BYTES


def format_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.1f} {unit}"
        size /= 1000


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def layer_choices(requested: list[int], states: tuple[State, ...]) -> dict[str, int]:
    """Layer choices to price, by label and number of layers: the requested layers, the last layer, the last four,
    every state; of these, the ones a cache can hold with the requested layers' token layout (one cache
    concatenates states of one width and grid: one stage of a hierarchical backbone)."""
    count = len(states)
    candidates = {
        f"requested {list(requested)}": list(requested),
        "last layer": [-1],
        "last 4 layers": list(range(-min(4, count - 1), 0)),
        f"all {count} hidden states": list(range(count)),
    }
    like = states[requested[0]]
    return {label: len(layers) for label, layers in candidates.items() if all(states[i] == like for i in layers)}


def plan_report(
    images: dict[str, int],
    reader: TokenReader,
    measurement: Measurement,
    num_processes: int,
    clips_per_video: int | None = None,
) -> str:
    """The plan in words; with ``clips_per_video`` the data set's items are videos and a cache row is a clip."""
    counted = f"{sum(images.values()):,} ({', '.join(f'{name} {count:,}' for name, count in images.items())})"
    unit, counted = (
        ("clip", f"Videos: {counted}, {clips_per_video} clip(s) each")
        if clips_per_video
        else ("image", f"Images: {counted}")
    )
    total = sum(images.values()) * (clips_per_video or 1)
    patches, prefix, width = measurement.num_patches, measurement.num_prefix_tokens, reader.layer_width
    tokens = f"{patches} patches + {prefix} [CLS]" if prefix else f"{patches} patches"
    lines = [
        counted + (f": {total:,} clips" if clips_per_video else ""),
        f"Tokens per {unit}: {patches + prefix} ({tokens}), {width} channels per layer",
        f"Tokens in all: {total * (patches + prefix):,}",
        "",
        f"Cache size (all splits, {'[CLS] + patches' if prefix else 'patches'}) per --token_dtype:",
    ]
    header = ["layers".ljust(28)] + [name.rjust(20) for name in STORAGE_COLUMNS]
    lines.append("  " + "".join(header))
    choices = layer_choices(reader.feature_layers, reader.states)
    for label, count in choices.items():
        sizes = [
            format_bytes(total * bytes_per_image(prefix, patches, width, count, token_dtype))
            for token_dtype in STORAGE_COLUMNS.values()
        ]
        lines.append("  " + label.ljust(28) + "".join(size.rjust(20) for size in sizes))
    requested = len(reader.feature_layers)
    per_row = [format_bytes(bytes_per_image(prefix, patches, width, requested, t)) for t in STORAGE_COLUMNS.values()]
    lines.append("  " + f"per {unit}, requested".ljust(28) + "".join(size.rjust(20) for size in per_row))
    if len(choices) < 4:
        lines.append("  (the other choices mix states of different widths or grids, which one cache cannot hold)")
    seconds = total / (measurement.images_per_second * num_processes)
    lines += [
        "",
        f"Measured here: {measurement.images_per_second:.1f} {unit}s/s per process ({measurement.compute_dtype} "
        "compute; one pass reads every layer of a choice)",
        f"Predicted extraction time: {format_duration(seconds)} on {num_processes} process(es) like this one",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hf_efficient_probing.cache.plan", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model_name_or_path", required=True, help="the backbone (Hub id or local directory)")
    parser.add_argument("--model_revision", default=None)
    parser.add_argument("--dataset_name", required=True, help="Hub data set id or local image folder")
    parser.add_argument("--dataset_config_name", default=None)
    parser.add_argument("--num_images", type=int, default=None, help="count to plan for instead of the data set's")
    parser.add_argument("--feature_layers", type=int, nargs="+", default=[-1])
    parser.add_argument("--image_size", type=int, default=None, help="default: the backbone's native input size")
    parser.add_argument("--backbone_dtype", choices=COMPUTE_DTYPES, default="auto")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--measure_batches", type=int, default=3, help="batches timed after one warm-up batch")
    parser.add_argument("--num_processes", type=int, default=1, help="processes the extraction will run on")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--frames_per_clip",
        type=int,
        default=None,
        help="video: default a video backbone's own; an image backbone reads clips of this many frames frame by frame",
    )
    parser.add_argument("--clips_per_video", type=int, default=1, help="video: clips cached per video")
    args = parser.parse_args(argv)

    images = {"all": args.num_images} if args.num_images else count_images(args.dataset_name, args.dataset_config_name)
    backbone = load_backbone(args.model_name_or_path, revision=args.model_revision).to(args.device)
    config = vision_config(backbone.config)
    video = backbone_family(config).video
    frames = args.frames_per_clip or (video.native_frames(config) if video else None)
    reader = plan_reader(backbone.config, args.feature_layers, frame_by_frame=video is None and frames is not None)
    image_size = (args.image_size,) * 2 if args.image_size else native_image_size(backbone.config, backbone)
    measurement = measure_extraction(
        backbone, reader, image_size, args.batch_size, args.measure_batches, args.backbone_dtype, frames
    )
    print(plan_report(images, reader, measurement, args.num_processes, args.clips_per_video if frames else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
