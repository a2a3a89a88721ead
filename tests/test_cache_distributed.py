"""Every process extracts: two ranks under ``accelerate launch`` fill one cache, a killed rank resumes its own slice,
and a probe trained from the cache on two processes matches one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_cache import all_rows, extract
from test_training_end_to_end import _args, _env, _load_script, backbone_dir, image_folder  # noqa: F401

from hf_efficient_probing.cache import TokenCache
from hf_efficient_probing.cache.store import MANIFEST_NAME, RANK_RECORDS_PATTERN

HERE = Path(__file__).parent
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
ROWS, SHARD_SIZE = 12, 2  # 6 shards: rank 0 writes 0, 2, 4 and rank 1 writes 1, 3, 5


def launch_extraction(root: Path, delay: float) -> subprocess.Popen:
    return subprocess.Popen([*LAUNCH, str(HERE / "extract_on_ranks.py"), str(root), str(delay)], env=_env())


def listed_shards(directory: Path, rank: int) -> list[int]:
    try:
        listing = json.loads((directory / RANK_RECORDS_PATTERN.format(rank)).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    return [record["start"] // SHARD_SIZE for record in listing["shards"]]


@pytest.mark.slow
def test_killed_rank_resumes_its_own_slice_without_duplicated_or_missing_rows(tmp_path):
    root = tmp_path / "cache"
    launcher = launch_extraction(root, delay=0.3)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            directories = [path for path in root.glob("*") if path.is_dir()]
            if directories and all(listed_shards(directories[0], rank) for rank in (0, 1)):
                break  # both ranks have written a shard of their own
            assert launcher.poll() is None, "the extraction ended before a rank could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("the ranks wrote no shards in time")
        os.kill(int((root / "pid-1").read_text()), signal.SIGKILL)
        launcher.wait(timeout=120)  # the launcher stops rank 0 once rank 1 is dead
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode != 0
    directory = directories[0]
    assert not (directory / MANIFEST_NAME).exists()
    done = {rank: listed_shards(directory, rank) for rank in (0, 1)}
    assert set(done[0]) <= {0, 2, 4} and set(done[1]) <= {1, 3, 5} and done[1], "each rank writes its own shards"

    rerun = launch_extraction(root, delay=0.0)
    assert rerun.wait(timeout=180) == 0
    cache = TokenCache(directory)
    report = cache.manifest["extraction"]
    left = {rank: [i for i in range(rank, ROWS // SHARD_SIZE, 2) if i not in done[rank]] for rank in (0, 1)}
    assert report["images_per_process"] == [SHARD_SIZE * len(left[0]), SHARD_SIZE * len(left[1])]
    tokens, labels = all_rows(cache)
    assert labels.tolist() == list(range(ROWS)), "no row duplicated or missing"
    fresh_tokens, _ = all_rows(extract(tmp_path / "one-process", shard_size=SHARD_SIZE, num_rows=ROWS))
    torch.testing.assert_close(tokens, fresh_tokens)
    cache.verify()
    assert sorted(path.name for path in directory.iterdir() if not path.name.startswith(".lock")) == [
        MANIFEST_NAME, *(f"shard-{i:05d}.safetensors" for i in range(ROWS // SHARD_SIZE))
    ], "no record files or temporary files are left"  # fmt: skip


@pytest.mark.slow
def test_two_processes_extract_and_train_like_one(backbone_dir, image_folder, tmp_path):  # noqa: F811
    cache = tmp_path / "cache"
    settings = (
        "--probe",
        "linear",
        "--protocol",
        "default",
        "--token_cache_dir",
        str(cache),
        "--num_train_epochs",
        "4",
    )
    two = tmp_path / "two"
    command = [*LAUNCH, str(HERE.parent / "examples" / "run_probing.py"),
               *_args(backbone_dir, image_folder, two, *settings, "--ddp_backend", "gloo",
                      "--per_device_train_batch_size", "4")]  # fmt: skip
    completed = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads((two / "run_summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["token_cache"]["processes"] == 2 and not summary["token_cache"]["reused"]
    assert summary["token_cache"]["images"] == 24 + 15
    for manifest in cache.glob(f"*/{MANIFEST_NAME}"):
        per_process = json.loads(manifest.read_text())["extraction"]["images_per_process"]
        assert len(per_process) == 2 and all(per_process), "both ranks extract"

    one = tmp_path / "one"
    _load_script().main(_args(backbone_dir, image_folder, one, *settings))
    single = json.loads((one / "run_summary.json").read_text())
    assert single["token_cache"]["reused"], "one process finds the cache two processes built"
    accuracy = {run: json.loads((run / "all_results.json").read_text())["eval_accuracy"] for run in (two, one)}
    assert accuracy[two] == pytest.approx(accuracy[one])
