"""`benchmarks/run.py --quick` runs every benchmark end to end (tiny sizes; no timing is checked)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_benchmarks_run_and_print_the_ratios_line():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,  # a quick run takes under a minute on a quiet machine; shared machines are slower
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(
        r"ratios: cache=[\d.]+x multiprobe=[\d.]+x ep_order=[\d.]+x "
        r"extraction_vs_forward=[\d.]+x bf16_vs_fp32=(?:[\d.]+x|n/a) two_processes=[\d.]+x identity_vs_decode=[\d.]+x lr_grid=[\d.]+x lr_grid_rungs=[\d.]+x",
        last,
    ), last
    assert "| peak memory" in result.stdout and "| extraction, 2 processes" in result.stdout
    assert "| extraction with an identity backbone vs. bare DataLoader decode" in result.stdout


def test_gpu_benchmark_smoke_reports_the_cache_images_and_positive_speeds():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    cells = dict(re.findall(r"^\| (.+?) +\| (.+?) +\|$", result.stdout, re.MULTILINE))
    assert cells["images in the cache"] == "8"  # the extraction, not only the bare loop, ran over all images
    for row in ("extraction", "bare forward", "extraction / forward"):
        assert float(re.match(r"[\d.]+", cells[row]).group()) > 0, (row, cells[row])
    assert cells["compute dtype"] == "bfloat16"


def test_identity_backbone_extraction_stores_every_decoded_image_as_its_tokens(tmp_path):
    """The zero-cost side of benchmarks/extraction.py extracts what the bare decode side decodes: every image, its
    pixels as the tokens after a zero [CLS], so the two sides of identity_vs_decode do the same decoding."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import extraction
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    images = extraction.eval_images(extraction.jpeg_photos(5, (64, 48)))
    cache = extraction.identity_extraction(images, tmp_path, batch_size=2, num_workers=1, shard_size=3)
    assert cache.extraction_report["images"] == 5 and cache.extraction_report["reused"] is False
    rows = cache.dataset(token_selection="all")
    for index in range(5):
        tokens, pixels = rows[index]["tokens"], images[index]["pixel_values"]
        assert tokens.shape == (197, 768)  # ViT-B/16's tokens at 224 px
        assert not tokens[0].any()
        torch.testing.assert_close(tokens[1:].float(), pixels.reshape(196, 768).half().float(), rtol=0, atol=0)
