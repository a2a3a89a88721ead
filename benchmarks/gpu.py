#!/usr/bin/env python
"""ViT-B/16 token extraction on a GPU: the cache's extraction against the bare forward, bfloat16, 224 px.

    python benchmarks/gpu.py            # a CUDA GPU: ViT-B/16 (random weights), 1024 images at 224 px
    python benchmarks/gpu.py --smoke    # the same code path on the CPU at tiny sizes (seconds)

Prints one Markdown table: the extraction's images/s (``extract_tokens``: DataLoader, layer reads, storage cast,
shard writes), the bare ``backbone(pixel_values=...)`` loop's images/s on the same images beside it, their ratio,
the number of images the cache holds, and the run's peak GPU memory (``torch.cuda.max_memory_allocated``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extraction import TINY, VIT_B16, Images, extraction_speed, forward_speed, make_backbone, warm_up  # noqa: E402

from hf_efficient_probing.tables import markdown_table  # noqa: E402


def bench_gpu(smoke: bool, workdir: Path) -> dict:
    device = "cpu" if smoke else "cuda"
    backbone_kwargs, size, count, batch_size = (TINY, 32, 8, 4) if smoke else (VIT_B16, 224, 1024, 128)
    backbone = make_backbone(backbone_kwargs, device)
    images = Images(count, size)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    warm_up(backbone, images, batch_size)
    report = extraction_speed(backbone, images, workdir / "bf16", "bfloat16", batch_size)
    forward = forward_speed(backbone, images, "bfloat16", batch_size)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke)"
    return dict(device=name, image_size=size, images=count, report=report, forward=forward, peak_bytes=peak)


def table(results: dict) -> str:
    report = results["report"]
    peak = "n/a (CPU)" if results["peak_bytes"] is None else f"{results['peak_bytes'] / 2**30:.2f} GiB"
    rows = [
        ["device", results["device"]],
        ["images in the cache", str(report["images"])],
        ["image size", f"{results['image_size']} px"],
        ["compute dtype", report["compute_dtype"]],
        ["extraction", f"{report['images_per_second']:.1f} img/s"],
        ["bare forward", f"{results['forward']:.1f} img/s"],
        ["extraction / forward", f"{report['images_per_second'] / results['forward']:.2f}x"],
        ["peak memory", peak],
    ]
    return markdown_table(["measure", "value"], rows)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="the same code path on the CPU, tiny sizes (seconds)")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA GPU here: run on a GPU machine, or pass --smoke for the CPU check")
    with tempfile.TemporaryDirectory() as tmp:
        results = bench_gpu(args.smoke, Path(tmp))
    print(table(results))
    return results


if __name__ == "__main__":
    main()
