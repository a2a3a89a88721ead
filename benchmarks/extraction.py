#!/usr/bin/env python
"""Token extraction at the machine's speed: the cache's extraction against the raw backbone forward, bfloat16
against float32, two processes against one, a backbone that costs nothing against the bare image decode, and (with
a GPU) ViT-B/16 at 224 px.

    python benchmarks/extraction.py [--quick]      # alone; benchmarks/run.py runs it too, beside the others

- extraction / forward: ``extract_tokens`` over a data set of preprocessed images (DataLoader, layer reads, storage
  cast, shard writes in the background) against ``backbone(pixel_values=...)`` on the same images in a bare loop, at
  the same precision: what the cache machinery costs on top of the backbone (target >= 0.9).
- bf16 / fp32: the extraction under bfloat16 autocast against float32 ("n/a" where the CPU has no bf16 units).
- two processes / one: the extraction on two processes of one thread each (two ranks of one cache, gloo) against
  one process of one thread, both from the extraction's own report (process start-up excluded): target >= 1.8.
- identity / decode: the extraction with a backbone that costs nothing (the identity on the pixels: each 16-pixel
  patch's 768 values are a token, ViT-B/16's token shape at 224 px) over JPEG photos, against the bare DataLoader
  that decodes and transforms the same images (the run's eval transform, same workers and batch size): what the
  extraction's own work (layer reads, storage cast, shard hashing and writes) leaves of the decode speed. At >= 0.9
  a GPU extraction is limited by the backbone, not by the I/O around it. Beside it, the same extraction from images
  already decoded in memory: the images/s the extraction's own work sustains at ViT-B/16's token size, to hold
  against a GPU's backbone speed.

Both sides of each ratio run a warmed-up backbone (a fresh process's first forwards pay one-off allocation and
kernel-selection costs that the bare loop's own warm-up batch hides), and the extraction and the bare loop alternate
``--repeats`` times, each side's best run counting, so that load from other processes hits both alike.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402
from transformers import ViTConfig, ViTImageProcessor  # noqa: E402
from transformers.modeling_outputs import BaseModelOutput  # noqa: E402

from hf_efficient_probing.backbones import TokenReader, build_backbone  # noqa: E402
from hf_efficient_probing.cache import (  # noqa: E402
    CachedSplit,
    ExtractionOptions,
    ExtractionPlan,
    TokenCache,
    TokenCacheKey,
    extract_tokens,
)
from hf_efficient_probing.cache.extraction import collate_images, default_num_workers  # noqa: E402
from hf_efficient_probing.cache.key import bfloat16_is_native  # noqa: E402
from hf_efficient_probing.training.prepared import ImageClassificationDataset  # noqa: E402
from hf_efficient_probing.training.transforms import ProcessorTransform, evaluation_processor  # noqa: E402

HERE = Path(__file__).resolve().parent
VIT_B16 = {}  # ViTConfig defaults: ViT-B/16 at 224 px
TINY = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32, patch_size=8
)


class Images(torch.utils.data.Dataset):
    """Preprocessed random images: what the backbone sees does not change its cost."""

    def __init__(self, count: int, size: int, seed: int = 0):
        self.images = torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return {"pixel_values": self.images[index], "labels": index}


def make_backbone(backbone_kwargs: dict, device: str = "cpu"):
    torch.manual_seed(0)
    return build_backbone(ViTConfig(**backbone_kwargs)).eval().to(device)


def extraction_speed(backbone, images: Images, root: Path, compute_dtype: str, batch_size: int, **kwargs) -> dict:
    """The extraction's report (images/s of all ranks together) for the last layer's patch tokens, float16."""
    reader = TokenReader(backbone.config, [-1])
    split = CachedSplit(f"random-{len(images)}", "train", "random", "pixel_values", "labels", ())
    key = TokenCacheKey.from_reader(backbone, reader, split, compute_dtype=compute_dtype)
    options = ExtractionOptions(root, batch_size=batch_size, progress=False, **kwargs)
    cache = extract_tokens(ExtractionPlan(backbone, reader, images, key, options))
    return cache.extraction_report


@torch.inference_mode()
def forward_speed(backbone, images: Images, compute_dtype: str, batch_size: int) -> float:
    """Images/s of the bare ``backbone(pixel_values=...)`` over the same images, already in memory."""
    device = next(backbone.parameters()).device
    batches = [images.images[i : i + batch_size].to(device) for i in range(0, len(images), batch_size)]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=compute_dtype == "bfloat16"):
        backbone(pixel_values=batches[0])  # warm-up
        synchronize(device)
        start = time.perf_counter()
        for batch in batches:
            backbone(pixel_values=batch)
        synchronize(device)
    return len(images) / (time.perf_counter() - start)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def two_process_speed(backbone_kwargs: dict, count: int, size: int, batch_size: int, root: Path) -> float:
    """Images/s of two single-thread ranks extracting one cache (from the merged manifest's report)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    task = json.dumps(dict(backbone=backbone_kwargs, count=count, size=size, batch_size=batch_size, root=str(root)))
    processes = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")  # fmt: skip
        processes.append(subprocess.Popen([sys.executable, __file__, "--rank_task", task], env=env))
    if any(process.wait() for process in processes):
        raise RuntimeError("a rank of the two-process extraction failed")
    manifest = json.loads(next(root.glob("*/manifest.json")).read_text())
    return manifest["extraction"]["images_per_second"]


@torch.inference_mode()
def warm_up(backbone, images: Images, batch_size: int) -> None:
    """One forward of a batch, as the bare loop's warm-up does, before a process's first timed extraction."""
    backbone(pixel_values=images.images[:batch_size].to(next(backbone.parameters()).device))


def rank_task(task: dict) -> None:
    torch.set_num_threads(1)
    backbone = make_backbone(task["backbone"])
    images = Images(task["count"], task["size"])
    warm_up(backbone, images, task["batch_size"])  # as the one-process side, which runs warm
    extraction_speed(backbone, images, Path(task["root"]), "float32", task["batch_size"], num_workers=0)


def bench_extraction(quick: bool, workdir: Path, repeats: int = 2) -> dict:
    backbone_kwargs = TINY if quick else VIT_B16
    size, count, batch_size = (32, 32, 8) if quick else (224, 64, 16)
    backbone = make_backbone(backbone_kwargs)
    images = Images(count, size)
    results = {"images": count, "image_size": size, "repeats": repeats}

    warm_up(backbone, images, batch_size)
    fp32, forward = 0.0, 0.0
    for repeat in range(repeats):  # alternating, so that load from other processes hits both sides alike
        report = extraction_speed(backbone, images, workdir / f"fp32-{repeat}", "float32", batch_size)
        fp32 = max(fp32, report["images_per_second"])
        forward = max(forward, forward_speed(backbone, images, "float32", batch_size))
    results.update(extract_fp32=fp32, forward_fp32=forward, extraction_vs_forward=fp32 / forward)
    if bfloat16_is_native("cpu"):
        bf16 = extraction_speed(backbone, images, workdir / "bf16", "bfloat16", batch_size)["images_per_second"]
        results.update(extract_bf16=bf16, bf16_vs_fp32=bf16 / fp32)
    else:
        results.update(extract_bf16=None, bf16_vs_fp32=None)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = extraction_speed(backbone, images, workdir / "one", "float32", batch_size, num_workers=0)
    finally:
        torch.set_num_threads(threads)
    two = two_process_speed(backbone_kwargs, count, size, batch_size, workdir / "two")
    results.update(one_process_one_thread=one["images_per_second"], two_processes_one_thread=two)
    results["two_vs_one_process"] = two / one["images_per_second"]

    if torch.cuda.is_available():
        gpu = make_backbone(VIT_B16, "cuda")
        gpu_images = Images(64 if quick else 1024, 224)
        report = extraction_speed(gpu, gpu_images, workdir / "gpu", "auto", 128)
        results["gpu"] = {"name": torch.cuda.get_device_name(), **report}
    results.update(bench_identity_vs_decode(quick, workdir, repeats))
    return results


# ----------------------------------------------------------------------------------------------------------------
# A backbone that costs nothing against the bare decode


class PixelPatches(nn.Module):
    """A ViT that is the identity on the pixels: an image's ``3 H W`` values, in memory order, are its
    ``H W / p^2`` tokens of ``3 p^2`` channels, after a zero [CLS] token, at every layer (a view, not a patch
    reordering, so that the backbone costs one copy). At 224 px with 16-pixel patches its tokens are ViT-B/16's
    (197 x 768): the extraction reads, casts, hashes and writes as much as for ViT-B/16."""

    def __init__(self, image_size: int = 224, patch_size: int = 16):
        super().__init__()
        self.config = ViTConfig(
            hidden_size=3 * patch_size**2, num_hidden_layers=1, num_attention_heads=1, intermediate_size=4,
            image_size=image_size, patch_size=patch_size,
        )  # fmt: skip
        self.anchor = nn.Parameter(torch.zeros(1))  # where the backbone lives (the extraction moves it), and a hash

    def forward(self, pixel_values, output_hidden_states=True, interpolate_pos_encoding=None) -> BaseModelOutput:
        patches = pixel_values.reshape(len(pixel_values), -1, self.config.hidden_size)  # a view: no copy, no compute
        tokens = torch.cat([patches.new_zeros(len(patches), 1, patches.shape[-1]), patches], dim=1)
        return BaseModelOutput(last_hidden_state=tokens, hidden_states=(tokens, tokens))


def jpeg_photos(count: int, size: tuple[int, int], seed: int = 0) -> datasets.Dataset:
    """``count`` JPEG images of ``size`` (width, height) with smooth random content, as a `datasets` image column:
    photo-like files for the decoder (random noise would be a worst case for JPEG)."""
    generator = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        coarse = generator.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        rows.append({"bytes": buffer.getvalue(), "path": None})
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    return datasets.Dataset.from_dict({"image": rows, "label": [i % 10 for i in range(count)]}, features=features)


def eval_images(photos: datasets.Dataset) -> ImageClassificationDataset:
    """``photos`` as a run's cache reads them: decoded and through the eval transform (shorter side 256, 224 crop)."""
    transform = ProcessorTransform(evaluation_processor(ViTImageProcessor()))
    return ImageClassificationDataset(photos, "image", "label", transform, "train")


def decode_speed(images: torch.utils.data.Dataset, batch_size: int, num_workers: int) -> float:
    """Images/s of the bare DataLoader over ``images`` (decode and eval transform), as the extraction builds it."""
    loader = torch.utils.data.DataLoader(
        images, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_images("pixel_values", "labels")
    )
    start = time.perf_counter()
    for _ in loader:
        pass
    return len(images) / (time.perf_counter() - start)


def identity_extraction(images, root: Path, batch_size: int, num_workers: int, shard_size: int) -> TokenCache:
    """The cache of :class:`PixelPatches` over ``images`` (float16, as the default run stores), with its report."""
    backbone = PixelPatches()
    reader = TokenReader(backbone.config, [-1])
    split = CachedSplit(f"jpeg-{len(images)}", "train", "eval transform", "image", "label", ())
    key = TokenCacheKey.from_reader(backbone, reader, split, compute_dtype="float32")
    options = ExtractionOptions(
        root, batch_size=batch_size, shard_size=shard_size, num_workers=num_workers, progress=False
    )
    return extract_tokens(ExtractionPlan(backbone, reader, images, key, options))


def bench_identity_vs_decode(quick: bool, workdir: Path, repeats: int = 2) -> dict:
    """The identity-backbone extraction against the bare decode, alternating ``repeats`` times, each side's best."""
    count, batch_size, shard_size = (16, 4, 8) if quick else (256, 32, 64)
    photo_size = (80, 60) if quick else (500, 375)  # ImageNet's typical photo
    images = eval_images(jpeg_photos(count, photo_size))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the main process feeds the "device"; the other cores decode (the extraction's default)
    try:
        num_workers = max(1, default_num_workers(torch.device("cpu")))
        decode, identity = 0.0, 0.0
        for repeat in range(repeats):
            decode = max(decode, decode_speed(images, batch_size, num_workers))
            root = workdir / f"identity-{repeat}"
            report = identity_extraction(images, root, batch_size, num_workers, shard_size).extraction_report
            identity = max(identity, report["images_per_second"])
        # the ceiling of the extraction's own work: the same tokens from images already decoded, in memory
        report = identity_extraction(Images(count, 224), workdir / "identity-decoded", batch_size, 0, shard_size)
    finally:
        torch.set_num_threads(threads)
    return dict(
        identity_images=count, photo_size=list(photo_size), decode_workers=num_workers,
        decode=decode, extract_identity=identity, identity_vs_decode=identity / decode,
        extract_identity_decoded=report.extraction_report["images_per_second"],
    )  # fmt: skip


def markdown_rows(results: dict) -> list[str]:
    """Rows of benchmarks/run.py's table."""
    r = results
    what = f"{r['images']} images at {r['image_size']} px"
    bf16 = "n/a (no bf16 on this CPU)" if r["bf16_vs_fp32"] is None else f"{r['bf16_vs_fp32']:.2f}x"
    bf16_speed = "n/a" if r["extract_bf16"] is None else f"{r['extract_bf16']:.1f} img/s"
    rows = [
        f"| extraction vs. bare backbone forward (fp32), {what} | {r['forward_fp32']:.1f} img/s "
        f"| {r['extract_fp32']:.1f} img/s | {r['extraction_vs_forward']:.2f}x |",
        f"| extraction bf16 vs. fp32, {what} | {r['extract_fp32']:.1f} img/s | {bf16_speed} | {bf16} |",
        f"| extraction, 2 processes x 1 thread vs. 1 process x 1 thread, {what} | {r['one_process_one_thread']:.1f} img/s "
        f"| {r['two_processes_one_thread']:.1f} img/s | {r['two_vs_one_process']:.2f}x |",
        f"| extraction with an identity backbone vs. bare DataLoader decode, {r['identity_images']} JPEGs "
        f"{r['photo_size'][0]}x{r['photo_size'][1]} to 224 px, {r['decode_workers']} workers | {r['decode']:.1f} img/s "
        f"| {r['extract_identity']:.1f} img/s | {r['identity_vs_decode']:.2f}x |",
        f"| extraction with an identity backbone from decoded images in memory (its own work: read, cast, hash, "
        f"write), {r['identity_images']} images | | {r['extract_identity_decoded']:.1f} img/s | |",
    ]
    if "gpu" in r:
        gpu = r["gpu"]
        rows.append(
            f"| ViT-B/16 extraction at 224 px on {gpu['name']} ({gpu['compute_dtype']}) | | "
            f"{gpu['images_per_second']:.0f} img/s | |"
        )
    return rows


def ratios_line(results: dict) -> str:
    bf16 = "n/a" if results["bf16_vs_fp32"] is None else f"{results['bf16_vs_fp32']:.2f}x"
    return (
        f"extraction_vs_forward={results['extraction_vs_forward']:.2f}x bf16_vs_fp32={bf16} "
        f"two_processes={results['two_vs_one_process']:.2f}x identity_vs_decode={results['identity_vs_decode']:.2f}x"
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny backbone: a smoke check (seconds)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of the extraction and the bare loop")
    parser.add_argument("--rank_task", help=argparse.SUPPRESS)  # one rank of the two-process run
    args = parser.parse_args(argv)
    if args.rank_task:
        rank_task(json.loads(args.rank_task))
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        results = bench_extraction(args.quick, Path(tmp), args.repeats)
    print(json.dumps(results, indent=1))
    print(f"ratios: {ratios_line(results)}")
    return results


if __name__ == "__main__":
    main()
