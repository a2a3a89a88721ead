#!/usr/bin/env python
"""Token extraction at the machine's speed: the cache's extraction against the raw backbone forward, bfloat16
against float32, two processes against one, and (with a GPU) ViT-B/16 at 224 px.

    python benchmarks/extraction.py [--quick]      # alone; benchmarks/run.py runs it too, beside the others

- extraction / forward: ``extract_tokens`` over a data set of preprocessed images (DataLoader, layer reads, storage
  cast, shard writes in the background) against ``backbone(pixel_values=...)`` on the same images in a bare loop, at
  the same precision: what the cache machinery costs on top of the backbone (target >= 0.9).
- bf16 / fp32: the extraction under bfloat16 autocast against float32 ("n/a" where the CPU has no bf16 units).
- two processes / one: the extraction on two processes of one thread each (two ranks of one cache, gloo) against
  one process of one thread, both from the extraction's own report (process start-up excluded): target >= 1.8.

Both sides of each ratio run a warmed-up backbone (a fresh process's first forwards pay one-off allocation and
kernel-selection costs that the bare loop's own warm-up batch hides), and the extraction and the bare loop alternate
``--repeats`` times, each side's best run counting, so that load from other processes hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import ViTConfig  # noqa: E402

from hf_efficient_probing.backbones import TokenReader, build_backbone  # noqa: E402
from hf_efficient_probing.cache import (  # noqa: E402
    CachedSplit,
    ExtractionOptions,
    ExtractionPlan,
    TokenCacheKey,
    extract_tokens,
)
from hf_efficient_probing.cache.key import bfloat16_is_native  # noqa: E402

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
    return results


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
        f"two_processes={results['two_vs_one_process']:.2f}x"
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
