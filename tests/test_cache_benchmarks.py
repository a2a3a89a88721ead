"""`benchmarks/run.py --quick` runs every benchmark end to end (tiny sizes; no timing is checked)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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
        r"extraction_vs_forward=[\d.]+x bf16_vs_fp32=(?:[\d.]+x|n/a) two_processes=[\d.]+x lr_grid=[\d.]+x lr_grid_rungs=[\d.]+x",
        last,
    ), last
    assert "| peak memory" in result.stdout and "| extraction, 2 processes" in result.stdout


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
