"""What a token cache will cost before it is extracted: images, tokens, disk per storage dtype and layer choice, and
the extraction time predicted from a short run of the backbone on this machine.

    python -m hf_efficient_probing.cache.plan --model_name_or_path facebook/dinov2-small \\
        --dataset_name ./my_images [--feature_layers -1] [--backbone_dtype auto] [--num_processes 8]

The data set is counted without downloading it (a Hub data set's split sizes come from its metadata; a local image
folder's files are counted), and the timing runs the backbone on random images at its input size: decoding and
transforms run in DataLoader workers beside the backbone, so the backbone is what an extraction waits for.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..backbones import TokenReader, load_backbone
from .key import COMPUTE_DTYPES, normalize_layers, resolve_compute_dtype

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLIT_FOLDERS = ("train", "validation", "val", "test")
STORAGE_BYTES = {"float16 / bfloat16": 2, "float32": 4}


def count_images(dataset_name: str, config_name: str | None = None) -> dict[str, int]:
    """Images per split: a local folder's image files (per split folder when it has them), else the split sizes a
    Hub data set's metadata records."""
    folder = Path(dataset_name)
    if folder.is_dir():
        splits = [folder / name for name in SPLIT_FOLDERS if (folder / name).is_dir()] or [folder]
        return {
            split.name if split != folder else "train": sum(
                path.suffix.lower() in IMAGE_SUFFIXES for path in split.rglob("*") if path.is_file()
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


@torch.inference_mode()
def measure_extraction(
    backbone, feature_layers, image_size: int, batch_size: int, batches: int, compute_dtype: str
) -> Measurement:
    """Images/s of the backbone reading ``feature_layers`` ([CLS] + patches) on random images, after a warm-up."""
    reader = TokenReader(backbone.config, feature_layers, token_selection="all")
    device = next(backbone.parameters()).device
    compute_dtype = resolve_compute_dtype(compute_dtype, device)
    images = torch.randn(batch_size, backbone.config.num_channels, image_size, image_size, device=device)
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
    return Measurement(batch_size * batches / seconds, compute_dtype, read.num_prefix_tokens, num_tokens - 1)


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


def layer_choices(requested: list[int], num_hidden_layers: int) -> dict[str, int]:
    """Layer choices to price, by label: the requested layers, the last layer, the last four, every block."""
    choices = {f"requested {list(requested)}": len(normalize_layers(requested, num_hidden_layers)), "last layer": 1}
    choices["last 4 layers"] = min(4, num_hidden_layers)
    choices[f"all {num_hidden_layers + 1} hidden states"] = num_hidden_layers + 1
    return choices


def plan_report(images: dict[str, int], config, measurement: Measurement, requested, num_processes: int) -> str:
    total = sum(images.values())
    patches, prefix, width = measurement.num_patches, measurement.num_prefix_tokens, config.hidden_size
    lines = [
        f"Images: {total:,} ({', '.join(f'{name} {count:,}' for name, count in images.items())})",
        f"Tokens per image: {patches + prefix} ({patches} patches + {prefix} [CLS]), {width} channels per layer",
        f"Tokens in all: {total * (patches + prefix):,}",
        "",
        "Cache size (all splits, [CLS] + patches):",
    ]
    header = ["layers".ljust(28)] + [name.rjust(20) for name in STORAGE_BYTES]
    lines.append("  " + "".join(header))
    for label, count in layer_choices(requested, config.num_hidden_layers).items():
        sizes = [format_bytes(total * (patches + prefix) * width * count * nbytes) for nbytes in STORAGE_BYTES.values()]
        lines.append("  " + label.ljust(28) + "".join(size.rjust(20) for size in sizes))
    seconds = total / (measurement.images_per_second * num_processes)
    lines += [
        "",
        f"Measured here: {measurement.images_per_second:.1f} images/s per process ({measurement.compute_dtype} "
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
    parser.add_argument("--image_size", type=int, default=None, help="default: the backbone config's image_size")
    parser.add_argument("--backbone_dtype", choices=COMPUTE_DTYPES, default="auto")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--measure_batches", type=int, default=3, help="batches timed after one warm-up batch")
    parser.add_argument("--num_processes", type=int, default=1, help="processes the extraction will run on")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    images = {"all": args.num_images} if args.num_images else count_images(args.dataset_name, args.dataset_config_name)
    backbone = load_backbone(args.model_name_or_path, revision=args.model_revision).to(args.device)
    config = backbone.config
    normalize_layers(args.feature_layers, config.num_hidden_layers)  # a clear error for a layer out of range
    measurement = measure_extraction(
        backbone,
        args.feature_layers,
        args.image_size or config.image_size,
        args.batch_size,
        args.measure_batches,
        args.backbone_dtype,
    )
    print(plan_report(images, config, measurement, args.feature_layers, args.num_processes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
