"""Compute precision in the key, the free-space check, where caches live, listing/deleting them, and the plan."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import tiny_backbone
from test_cache import Images, all_rows, extract, make_key, run, single_thread  # noqa: F401

import hf_efficient_probing.cache.extraction as extraction
import hf_efficient_probing.cache.key as cache_key
import hf_efficient_probing.cache.location as location
from hf_efficient_probing.backbones import TokenReader
from hf_efficient_probing.cache import listing, plan
from hf_efficient_probing.cache.location import CACHE_ENV, default_cache_root


def test_compute_dtype_names_another_cache(monkeypatch):
    backbone = tiny_backbone("vit")
    reader = TokenReader(backbone.config, [-1])
    fp32 = make_key(backbone, reader, compute_dtype="float32")
    bf16 = make_key(backbone, reader, compute_dtype="bfloat16")
    assert fp32.fingerprint != bf16.fingerprint
    monkeypatch.setattr(cache_key, "bfloat16_is_native", lambda device: True)
    assert make_key(backbone, reader, compute_dtype="auto").fingerprint == bf16.fingerprint
    monkeypatch.setattr(cache_key, "bfloat16_is_native", lambda device: False)
    assert make_key(backbone, reader, compute_dtype="auto").fingerprint == fp32.fingerprint
    with pytest.raises(ValueError, match="compute dtype must be one of"):
        make_key(backbone, reader, compute_dtype="float64")


def test_bfloat16_extraction_runs_the_backbone_under_autocast(tmp_path):
    fp32_tokens, _ = all_rows(extract(tmp_path, compute_dtype="float32", dtype="float16"))
    bf16 = extract(tmp_path, compute_dtype="bfloat16", dtype="float16")  # stored in another dtype than computed
    assert bf16.extraction_report["compute_dtype"] == "bfloat16"
    bf16_tokens, _ = all_rows(bf16)
    assert bf16_tokens.dtype == torch.float16
    assert not torch.equal(bf16_tokens, fp32_tokens), "bfloat16 autocast changes the low bits"
    torch.testing.assert_close(bf16_tokens.float(), fp32_tokens.float(), atol=0.1, rtol=0.05)


def test_extraction_stops_before_writing_when_the_cache_will_not_fit(tmp_path, monkeypatch):
    free = {"bytes": 10_000}
    monkeypatch.setattr(extraction.shutil, "disk_usage", lambda path: type("Usage", (), {"free": free["bytes"]}))
    # 10 rows x 17 tokens x 64 channels x 4 bytes = 43,520 bytes of tokens
    with pytest.raises(OSError, match=r"needs 0\.00 GB more.*python -m hf_efficient_probing\.cache\.plan"):
        extract(tmp_path)
    assert not list(tmp_path.glob("*/*.safetensors")), "nothing is written"
    free["bytes"] = 50_000
    assert extract(tmp_path).num_rows == 10


def test_default_cache_root_is_under_hf_home_or_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setattr(location.constants, "HF_HOME", str(tmp_path / "hf"))
    assert default_cache_root() == tmp_path / "hf" / "hf_efficient_probing" / "token-cache"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "elsewhere"))
    backbone = tiny_backbone("vit")
    reader = TokenReader(backbone.config, [-1])
    cache = run(backbone, reader, make_key(backbone, reader), None)
    assert cache.directory.parent == tmp_path / "elsewhere"


def test_listing_shows_each_cache_and_deletes_on_request(tmp_path, capsys):
    first, second = extract(tmp_path, split="train"), extract(tmp_path, split="validation")
    (tmp_path / "interrupted").mkdir()
    (tmp_path / "interrupted" / "shard-00000.safetensors").write_bytes(b"x" * 10)
    caches = {cache.fingerprint: cache for cache in listing.scan_caches(tmp_path)}
    assert set(caches) == {first.directory.name, second.directory.name, "interrupted"}
    size = sum(path.stat().st_size for path in first.directory.iterdir())
    assert caches[first.directory.name].size_bytes == size
    assert caches[first.directory.name].complete and not caches["interrupted"].complete
    assert (caches[second.directory.name].split, caches[second.directory.name].rows) == ("validation", 10)

    assert listing.main(["--cache_dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith(first.directory.name))
    assert re.search(r"complete\s+10\s+train\s+1,2\s+float32\s+float32", row)
    assert "3 cache(s)" in table

    with pytest.raises(SystemExit):
        listing.main(["--cache_dir", str(tmp_path), "delete", "zzz"])  # names no cache
    assert listing.main(["--cache_dir", str(tmp_path), "delete", first.directory.name[:8]]) == 0
    assert not first.directory.exists() and second.directory.exists()


def test_plan_counts_images_tokens_and_bytes(saved_backbone, tmp_path, capsys):
    from PIL import Image

    for split, count in (("train", 3), ("validation", 2)):
        (tmp_path / "images" / split / "a").mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (8, 8)).save(tmp_path / "images" / split / "a" / f"{i}.png")
    argv = ["--model_name_or_path", saved_backbone("vit"), "--dataset_name", str(tmp_path / "images"),
            "--feature_layers", "1", "2", "--batch_size", "2", "--measure_batches", "1", "--backbone_dtype", "float32",
            "--num_processes", "2"]  # fmt: skip
    assert plan.main(argv) == 0
    out = capsys.readouterr().out
    assert "Images: 5 (train 3, validation 2)" in out
    assert "Tokens per image: 17 (16 patches + 1 [CLS]), 32 channels per layer" in out
    # 5 images x 17 tokens x 2 layers x 32 channels x 2 or 4 bytes; or 16 patches of 8 bits + 2 (float8) or 4 (int8)
    # bytes a token and the [CLS] token in float16; and an 8-byte label per image
    assert re.search(r"requested \[1, 2\]\s+10\.9 KB\s+21\.8 KB\s+6\.1 KB\s+6\.4 KB", out)
    assert re.search(r"all 3 hidden states\s+16\.4 KB\s+32\.7 KB\s+9\.2 KB\s+9\.6 KB", out)
    assert re.search(r"per image, requested\s+2\.2 KB\s+4\.4 KB\s+1\.2 KB\s+1\.3 KB", out)
    assert re.search(r"Measured here: [\d.]+ images/s per process \(float32 compute", out)
    assert "on 2 process(es)" in out

    assert plan.main([*argv, "--num_images", "1000000000"]) == 0  # an ImageNet-sized plan: the time shows in hours
    out = capsys.readouterr().out
    speed = float(re.search(r"Measured here: ([\d.]+) images/s", out).group(1))
    hours = float(re.search(r"Predicted extraction time: ([\d.]+) h on 2 process", out).group(1))
    assert hours == pytest.approx(1e9 / (2 * speed) / 3600, rel=0.06)


@pytest.mark.parametrize("model_type", ["vit", "dinov2"])
def test_backbones_extract_with_sdpa_attention(saved_backbone, model_type):
    """The fast path: transformers 5 picks SDPA for the families that have it, built or loaded."""
    from hf_efficient_probing.backbones import load_backbone

    assert tiny_backbone(model_type).config._attn_implementation == "sdpa"
    assert load_backbone(saved_backbone(model_type)).config._attn_implementation == "sdpa"


def test_plan_prices_a_convnext_from_its_measured_states(saved_backbone, tmp_path, capsys):
    """A CNN has no ``hidden_size`` or [CLS] token, and its stages differ in width and grid: the plan reads the
    widths and grids the backbone's states have, and prices only the layer choices one cache can hold."""
    argv = ["--model_name_or_path", saved_backbone("convnext"), "--dataset_name", str(tmp_path), "--num_images", "10",
            "--batch_size", "2", "--measure_batches", "1", "--backbone_dtype", "float32"]  # fmt: skip
    assert plan.main([*argv, "--feature_layers", "-1"]) == 0
    out = capsys.readouterr().out
    # the last stage: 32 channels on a 4x4 grid (its embeddings and first stage are 16 wide on 8x8)
    assert "Tokens per image: 16 (16 patches), 32 channels per layer" in out
    assert re.search(r"requested \[-1\]\s+10\.3 KB\s+20\.6 KB", out)  # 10 x (16 tokens x 32 x 2 or 4 bytes + label)
    assert re.search(r"last layer\s+10\.3 KB", out)
    assert "last 4 layers" not in out and "all 3 hidden states" not in out

    assert plan.main([*argv, "--feature_layers", "0", "1"]) == 0  # the embeddings and the first stage: one layout
    out = capsys.readouterr().out
    assert "Tokens per image: 64 (64 patches), 16 channels per layer" in out
    assert re.search(r"requested \[0, 1\]\s+41\.0 KB\s+82\.0 KB", out)  # 10 x (64 x 16 x 2 layers x 2 or 4 B + 8)
    assert "last layer" not in out


@pytest.mark.parametrize(
    ("device", "cores", "threads", "local_world_size", "workers"),
    [
        ("cpu", 2, 2, 1, 0),  # the backbone's threads use both cores: the main process decodes between batches
        ("cpu", 2, 1, 1, 1),  # one core left idle: one worker decodes on it
        ("cpu", 2, 1, 2, 0),  # two ranks of one thread each on two cores
        ("cpu", 32, 4, 1, 8),  # at most eight
        ("cuda", 16, 16, 2, 8),  # the GPU computes: the rank's share of the cores feeds it
        ("cuda", 3, 3, 1, 3),
    ],
)
def test_default_workers_get_the_cores_the_compute_leaves_idle(
    monkeypatch, device, cores, threads, local_world_size, workers
):
    monkeypatch.setattr(extraction.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world_size))
    torch.set_num_threads(threads)  # the autouse fixture restores it
    assert extraction.default_num_workers(torch.device(device)) == workers


def test_extraction_loads_with_the_default_workers(tmp_path, monkeypatch):
    """On a CPU whose cores the backbone's threads use, the extraction's DataLoader runs without workers."""
    used = []

    class RecordingLoader(torch.utils.data.DataLoader):
        def __init__(self, *args, num_workers, **kwargs):
            used.append(num_workers)
            super().__init__(*args, num_workers=num_workers, **kwargs)

    monkeypatch.setattr(extraction, "DataLoader", RecordingLoader)
    monkeypatch.setattr(extraction.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    torch.set_num_threads(2)
    extract(tmp_path)
    assert used == [0]


def test_extraction_seconds_leave_out_the_wait_for_the_other_ranks(tmp_path, monkeypatch):
    """A rank that starts first waits at the barrier for the others' start-up; that is not extraction time."""
    clock = {"offset": 0.0}
    real_perf_counter = extraction.time.perf_counter
    monkeypatch.setattr(extraction.time, "perf_counter", lambda: real_perf_counter() + clock["offset"])
    monkeypatch.setattr(extraction, "wait_for_everyone", lambda *args: clock.update(offset=clock["offset"] + 1000))
    report = extract(tmp_path).extraction_report
    assert 0 < report["seconds"] < 1000
