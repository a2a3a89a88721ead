"""Token cache: named by its inputs, reused or rebuilt, resumable after a real SIGKILL, never trusting a bad shard."""

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
from conftest import cache_key, cached_split, tiny_backbone
from safetensors import safe_open

import hf_efficient_probing as hep
from hf_efficient_probing.backbones import TokenReader
from hf_efficient_probing.cache import (
    CorruptCacheError,
    ExtractionOptions,
    ExtractionPlan,
    TokenCache,
    TokenCacheDataset,
    cache_tokens_for_model,
    extract_tokens,
    weights_fingerprint,
)
from hf_efficient_probing.cache.extraction import exclusive_lock
from hf_efficient_probing.cache.manifest import MANIFEST_NAME, RANK_RECORDS_PATTERN

NUM_ROWS = 10


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny tensors run fastest on one thread, above all on a shared, loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Images(torch.utils.data.Dataset):
    """Fixed random images whose label is their index, so duplicated or missing rows show in the labels."""

    def __init__(self, num_rows: int = NUM_ROWS, delay: float = 0.0):
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(num_rows, 3, 32, 32, generator=generator)
        self.delay = delay

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        time.sleep(self.delay)
        return {"pixel_values": self.images[index], "labels": index}


make_key = cache_key


def run(backbone, reader, key, root, **options):
    """``extract_tokens`` of the test images, quietly."""
    plan = ExtractionPlan(
        backbone,
        reader,
        options.pop("images", None) or Images(),
        key,
        ExtractionOptions(root, progress=False, **options),
    )
    return extract_tokens(plan)


def extract(
    cache_root, delay: float = 0.0, shard_size: int = 3, num_rows: int = NUM_ROWS, **key_overrides
) -> TokenCache:
    """The extraction the tests (and the killed subprocesses) run: layers 1 and 2 of a tiny ViT, [CLS] + patches."""
    backbone = tiny_backbone("vit")
    reader = TokenReader(backbone.config, [1, -1], token_selection="all")
    key = make_key(backbone, reader, **key_overrides)
    return run(
        backbone, reader, key, cache_root, images=Images(num_rows, delay=delay), batch_size=2, shard_size=shard_size
    )


def all_rows(cache: TokenCache) -> tuple[torch.Tensor, torch.Tensor]:
    dataset = TokenCacheDataset(cache)
    return torch.stack([dataset[i]["tokens"] for i in range(len(dataset))]), dataset.labels


def count_backbone_rows(backbone) -> list[int]:
    seen = []
    backbone.register_forward_hook(
        lambda module, args, kwargs, output: seen.append(kwargs["pixel_values"].shape[0]), with_kwargs=True
    )
    return seen


def test_cached_tokens_are_the_tokens_the_reader_returns(tmp_path):
    cache = extract(tmp_path)
    backbone = tiny_backbone("vit")
    expected = TokenReader(backbone.config, [1, 2], token_selection="all")(backbone, Images().images)
    tokens, labels = all_rows(cache)
    torch.testing.assert_close(tokens, expected.tokens)
    assert labels.tolist() == list(range(NUM_ROWS))
    assert cache.num_prefix_tokens == 1 and cache.grid_size == (4, 4) and cache.feature_layers == (1, 2)


def test_second_run_reuses_the_cache(tmp_path):
    first = extract(tmp_path)
    backbone = tiny_backbone("vit")
    seen = count_backbone_rows(backbone)
    reader = TokenReader(backbone.config, [1, 2], token_selection="all")
    again = run(backbone, reader, make_key(backbone, reader), tmp_path)
    assert again.directory == first.directory and seen == []


@pytest.mark.parametrize(
    "change",
    [
        dict(preprocessing="eval-transform-v2"),
        dict(dataset="images-v2"),
        dict(split="validation"),
        dict(dtype="float16"),
        dict(backbone_name=("org/vit", "abc123")),
        dict(image_column="image2"),
        dict(label_column="coarse_label"),
        dict(label_names=tuple(str(i) for i in range(9, -1, -1))),
        dict(compute_dtype="bfloat16"),
    ],
)
def test_a_changed_input_names_another_cache(change):
    backbone = tiny_backbone("vit")
    reader = TokenReader(backbone.config, [-1])
    assert make_key(backbone, reader, **change).fingerprint != make_key(backbone, reader).fingerprint


def test_reader_and_weights_changes_name_another_cache():
    backbone = tiny_backbone("vit")
    base = make_key(backbone, TokenReader(backbone.config, [-1])).fingerprint
    assert make_key(backbone, TokenReader(backbone.config, [-1])).fingerprint == base
    assert make_key(backbone, TokenReader(backbone.config, [2])).fingerprint == base, "-1 and 2 are the same layer"
    all_tokens = make_key(backbone, TokenReader(backbone.config, [-1], token_selection="all"))
    assert all_tokens.fingerprint == base, "a cache stores every token: the selection is the reader's, not the key's"
    for reader in (
        TokenReader(backbone.config, [1]),
        TokenReader(backbone.config, [-1], apply_final_norm=True),
    ):
        assert make_key(backbone, reader).fingerprint != base
    other_weights = tiny_backbone("vit", seed=1)
    assert weights_fingerprint(other_weights) != weights_fingerprint(backbone)
    assert make_key(other_weights, TokenReader(other_weights.config, [-1])).fingerprint != base


def test_a_changed_input_rebuilds(tmp_path):
    first = extract(tmp_path)
    second = extract(tmp_path, dataset="images-v2")
    assert second.directory != first.directory
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.directory.name, second.directory.name])


def test_resume_after_sigkill_has_no_duplicated_or_missing_rows(tmp_path):
    """A real extraction in a subprocess, killed with SIGKILL once two shards are on disk, then resumed here."""
    killed_root, fresh_root = tmp_path / "killed", tmp_path / "fresh"
    script = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_cache; "
        f"test_cache.extract({str(killed_root)!r}, delay=0.15)"
    )
    child = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            records = list(killed_root.glob(f"*/{RANK_RECORDS_PATTERN.format(0)}"))
            if records and len(json.loads(records[0].read_text())["shards"]) >= 2:
                break
            assert child.poll() is None, "the extraction ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("the extraction wrote no shards in time")
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    directory = records[0].parent
    assert not (directory / MANIFEST_NAME).exists()
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        TokenCache(directory)

    done = sum(shard["rows"] for shard in json.loads(records[0].read_text())["shards"])
    backbone = tiny_backbone("vit")
    seen = count_backbone_rows(backbone)
    reader = TokenReader(backbone.config, [1, 2], token_selection="all")
    resumed = run(backbone, reader, make_key(backbone, reader), killed_root, batch_size=2, shard_size=3)
    assert resumed.directory == directory
    assert sum(seen) == NUM_ROWS - done, "the complete shards are not extracted again"
    tokens, labels = all_rows(resumed)
    assert labels.tolist() == list(range(NUM_ROWS))
    fresh_tokens, _ = all_rows(extract(fresh_root))
    torch.testing.assert_close(tokens, fresh_tokens)
    resumed.verify()
    assert not [p for p in directory.iterdir() if ".tmp-" in p.name]


def test_truncated_shard_is_detected_and_extracted_again(tmp_path):
    cache = extract(tmp_path)
    shard = cache.directory / cache.shards[1].file
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(CorruptCacheError, match="truncated"):
        TokenCache(cache.directory)

    # The manifest still says complete: mark it interrupted, as a kill after the shard's listing would leave it.
    manifest = json.loads((cache.directory / MANIFEST_NAME).read_text())
    (cache.directory / MANIFEST_NAME).write_text(json.dumps({**manifest, "complete": False}))
    (cache.directory / ".shard-00002.safetensors.tmp-1").write_bytes(b"half a shard")
    backbone = tiny_backbone("vit")
    seen = count_backbone_rows(backbone)
    reader = TokenReader(backbone.config, [1, 2], token_selection="all")
    rebuilt = run(backbone, reader, make_key(backbone, reader), tmp_path, batch_size=2, shard_size=3)
    assert sum(seen) == 3, "only the bad shard is extracted again, every shard that verifies is kept"
    assert all_rows(rebuilt)[1].tolist() == list(range(NUM_ROWS))
    assert not [p for p in cache.directory.iterdir() if ".tmp-" in p.name]


def test_all_shards_present_but_not_marked_complete_needs_no_extraction(tmp_path):
    cache = extract(tmp_path)
    manifest = json.loads((cache.directory / MANIFEST_NAME).read_text())
    (cache.directory / MANIFEST_NAME).write_text(json.dumps({**manifest, "complete": False}))
    backbone = tiny_backbone("vit")
    seen = count_backbone_rows(backbone)
    reader = TokenReader(backbone.config, [1, 2], token_selection="all")
    again = run(backbone, reader, make_key(backbone, reader), tmp_path, shard_size=3)
    assert seen == [] and again.num_rows == NUM_ROWS


def test_altered_shard_fails_verification(tmp_path):
    cache = extract(tmp_path)
    shard = cache.directory / cache.shards[0].file
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptCacheError, match="SHA-256"):
        cache.verify()


def test_one_extraction_per_cache_at_a_time(tmp_path):
    backbone = tiny_backbone("vit")
    reader = TokenReader(backbone.config, [-1])
    key = make_key(backbone, reader)
    (tmp_path / key.fingerprint).mkdir()
    with exclusive_lock(tmp_path / key.fingerprint), pytest.raises(RuntimeError, match="Another process"):
        run(backbone, reader, key, tmp_path)


def test_views_select_layers_and_drop_cls(tmp_path):
    cache = extract(tmp_path)
    backbone = tiny_backbone("vit")
    images = Images().images[:2]
    view = cache.dataset(feature_layers=[-1], token_selection="patch")
    expected = TokenReader(backbone.config, [2])(backbone, images).tokens
    torch.testing.assert_close(torch.stack([view[0]["tokens"], view[1]["tokens"]]), expected)
    swapped = cache.dataset(feature_layers=[2, 1])
    expected = TokenReader(backbone.config, [2, 1], token_selection="all")(backbone, images).tokens
    torch.testing.assert_close(torch.stack([swapped[0]["tokens"], swapped[1]["tokens"]]), expected)
    with pytest.raises(ValueError, match="hold layers"):
        cache.dataset(feature_layers=[0])


def test_rows_are_views_of_the_mapped_shards_and_load_in_workers(tmp_path):
    cache = extract(tmp_path)
    row = cache.dataset(feature_layers=[2])[4]["tokens"]
    assert row.untyped_storage().nbytes() == cache.shards[1].bytes, "a view of the shard file, not a copy"
    dataset = TokenCacheDataset(cache)
    loader = torch.utils.data.DataLoader(dataset, batch_size=5, num_workers=1)
    tokens = torch.cat([batch["tokens"] for batch in loader])
    torch.testing.assert_close(tokens, all_rows(cache)[0])


def test_shards_are_plain_safetensors(tmp_path):
    cache = extract(tmp_path)
    with safe_open(str(cache.directory / cache.shards[0].file), framework="pt") as shard:
        assert set(shard.keys()) == {"tokens.1", "tokens.2", "labels"}, "one tensor per layer"
        assert shard.get_slice("tokens.2").get_shape() == [3, 17, 32]


def test_probe_trained_on_cached_tokens_gives_the_same_logits_on_images(tmp_path, saved_backbone):
    """Train through the HF Trainer on cached tokens, save a probe-only checkpoint, load it as a normal probe."""
    from transformers import Trainer, TrainingArguments

    backbone_path = saved_backbone("vit")
    model = hep.ViTForEfficientProbing.from_backbone(backbone_path, num_labels=NUM_ROWS, num_queries=4)
    cache = cache_tokens_for_model(
        model,
        Images(),
        cached_split(),
        ExtractionOptions(tmp_path / "cache", progress=False),
        storage=("float32", "float32"),
    )
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=0.1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    before = model.probe.classifier.weight.clone()
    Trainer(model=model, args=args, train_dataset=cache.dataset()).train()
    assert not torch.equal(before, model.probe.classifier.weight), "the Trainer trained the probe"
    model.save_pretrained(tmp_path / "probe")

    loaded = hep.AutoModelForEfficientProbing.from_pretrained(tmp_path / "probe")
    assert isinstance(loaded, hep.ViTForEfficientProbing)
    tokens, _ = all_rows(cache)
    with torch.no_grad():
        from_images = loaded(pixel_values=Images().images).logits
        from_cache = loaded(tokens=tokens).logits
    torch.testing.assert_close(from_images, from_cache, rtol=1e-5, atol=1e-5)


def test_a_reused_cache_is_verified_and_an_altered_shard_is_extracted_again(tmp_path):
    """A complete cache is reused only after every shard is re-hashed: an altered one is never served."""
    cache = extract(tmp_path)
    clean = all_rows(cache)[0]
    shard = cache.directory / cache.shards[1].file
    tokens = torch.zeros_like(TokenCacheDataset(cache).tokens(3))
    data = bytearray(shard.read_bytes())
    data[-len(tokens.numpy().tobytes()) :] = tokens.numpy().tobytes()  # same size: only the hash can tell
    shard.write_bytes(bytes(data))
    backbone = tiny_backbone("vit")
    seen = count_backbone_rows(backbone)
    reader = TokenReader(backbone.config, [1, 2], token_selection="all")
    again = run(backbone, reader, make_key(backbone, reader), tmp_path, batch_size=2, shard_size=3)
    assert sum(seen) == 3, "the altered shard (3 rows) is extracted again, the others are reused"
    assert not again.extraction_report["reused"]
    torch.testing.assert_close(all_rows(again)[0], clean)
    again.verify()


@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
def test_a_probe_on_cached_tokens_gives_its_live_logits_within_the_extraction_precision(tmp_path, compute_dtype):
    """The cache's precision is what the test names: float32 extraction equals the live float32 tokens and logits;
    bfloat16 autocast (the default on CPUs with bf16 units and on GPUs, emulated elsewhere) equals the live reader
    under the same autocast, and stays within bf16's rounding (8 bits of mantissa) of the float32 logits."""
    backbone = tiny_backbone("vit")
    model = hep.ViTForEfficientProbing.from_backbone(backbone, num_labels=NUM_ROWS, num_queries=4).eval()
    storage = "float32" if compute_dtype == "float32" else "bfloat16"
    cache = cache_tokens_for_model(
        model, Images(), cached_split(), ExtractionOptions(tmp_path, progress=False), storage=(storage, compute_dtype)
    )
    assert cache.extraction_report["compute_dtype"] == compute_dtype
    tokens, _ = all_rows(cache)
    images = Images().images
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=compute_dtype == "bfloat16"):
        live_tokens = model.token_reader(backbone, images).tokens
    torch.testing.assert_close(tokens, live_tokens.to(tokens.dtype), rtol=0, atol=0)
    with torch.no_grad():
        from_cache, from_images = model(tokens=tokens).logits, model(pixel_values=images).logits
    tolerance = {"float32": dict(rtol=1e-5, atol=1e-5), "bfloat16": dict(rtol=0.05, atol=0.05)}[compute_dtype]
    torch.testing.assert_close(from_cache, from_images, **tolerance)
    if compute_dtype == "bfloat16":
        assert not torch.equal(from_cache, from_images), "bf16 rounding shows in the low bits"
