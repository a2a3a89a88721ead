"""--streaming: a local parquet data set read as a stream gives the run it gives loaded whole (the same selection
split under the hash rule, the same token cache rows, the same chosen probe and figures); the hash rule holds out the
same images in any order, stratified; a streamed extraction resumes after its last durable shard and leaves an
ordinary cache of the current format; live training reads the stream; what a stream cannot do fails clearly."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from test_cache import all_rows, count_backbone_rows
from test_cache_distributed import LAUNCH
from test_training_end_to_end import SCRIPT, _args, _env, _load_script, backbone_dir, image_folder  # noqa: F401
from transformers import ViTImageProcessor

from hf_efficient_probing import AutoModelForEfficientProbing
from hf_efficient_probing.backbones import load_backbone
from hf_efficient_probing.cache import ExtractionOptions, TokenCache, TokenCacheKey
from hf_efficient_probing.cache.groups import complete_layer_groups
from hf_efficient_probing.training import load_image_dataset
from hf_efficient_probing.training.arguments import DataArguments, ProbeArguments
from hf_efficient_probing.training.data import DataError
from hf_efficient_probing.training.job import check_arguments
from hf_efficient_probing.training.prepared import prepare_data
from hf_efficient_probing.training.selection import hash_selection_mask, image_id, selection_mask
from hf_efficient_probing.training.streaming import StreamedImages

DEFAULT_RUN = ("--protocol", "default", "--probe", "linear", "--learning_rates", "0.1", "1", "--num_train_epochs",
               "3", "--selection_fraction", "0.375", "--feature_layers", "1", "2")  # fmt: skip


@pytest.fixture
def parquet_dir(image_folder, tmp_path) -> str:  # noqa: F811
    """The image folder as a parquet data set (images as bytes), two files per split: what a Hub copy looks like."""
    dataset, image_column, label_column = load_image_dataset(image_folder)
    root = tmp_path / "parquet"
    (root / "data").mkdir(parents=True)
    for split, rows in dataset.items():
        stored = rows.cast_column(image_column, datasets.Image(decode=False))[image_column]
        images = [{"bytes": Path(image["path"]).read_bytes(), "path": Path(image["path"]).name} for image in stored]
        features = datasets.Features({"image": datasets.Image(), "label": rows.features[label_column]})
        table = datasets.Dataset.from_dict({"image": images, "label": rows[label_column]}, features=features)
        half = len(table) // 2
        for index, part in enumerate((range(half), range(half, len(table)))):
            table.select(part).to_parquet(str(root / "data" / f"{split}-{index:05d}-of-00002.parquet"))
    return str(root)


def _run(backbone_dir, parquet_dir, output, cache, *extra) -> dict:  # noqa: F811
    _load_script().main(_args(backbone_dir, parquet_dir, output, *DEFAULT_RUN, "--token_cache_dir", str(cache), *extra))
    return json.loads((output / "run_summary.json").read_text())


@pytest.mark.slow
def test_a_streamed_run_is_the_run_of_the_data_set_loaded_whole(backbone_dir, parquet_dir, tmp_path):  # noqa: F811
    loaded = _run(backbone_dir, parquet_dir, tmp_path / "loaded", tmp_path / "c1", "--selection_rule", "hash")
    streamed = _run(backbone_dir, parquet_dir, tmp_path / "streamed", tmp_path / "c2", "--streaming")
    assert streamed["streaming"] == {"processes": 1} and "streaming" not in loaded
    assert streamed["selection_split"] == loaded["selection_split"]
    assert streamed["selection_split"]["method"] == "hash" and streamed["selection_split"]["rows"] == 9
    assert (
        (streamed["selection_samples"], streamed["train_samples"])
        == (9, 15)
        == (
            loaded["selection_samples"],
            loaded["train_samples"],
        )
    )
    chosen = [{k: v for k, v in run["chosen"]["linear"].items() if k != "train_runtime"} for run in (streamed, loaded)]
    assert chosen[0] == chosen[1], "the same member, epoch and figures"
    assert streamed["members"] == loaded["members"], "every member's selection accuracy, epoch by epoch"
    caches = {
        root: {cache.key["split"]: cache for cache in map(TokenCache, (tmp_path / root).glob("*/"))}
        for root in ("c1", "c2")
    }
    assert sorted(caches["c1"]) == sorted(caches["c2"]) == ["selection", "train", "validation"]
    for split, cache in caches["c2"].items():
        assert cache.manifest["stream"]["processes"] == 1 and cache.feature_layers == (1, 2)
        tokens, labels = all_rows(cache)
        expected = all_rows(caches["c1"][split])
        torch.testing.assert_close(tokens, expected[0], rtol=0, atol=0)  # the same rows, in the same order
        assert labels.tolist() == expected[1].tolist()


def test_the_hash_rule_is_stratified_and_holds_out_the_same_images_in_any_order():
    ids = np.arange(300, dtype=np.uint64) * np.uint64(2654435761)
    labels = np.repeat(np.arange(3), [200, 80, 20])
    held = hash_selection_mask(ids, labels, 0.25, seed=3)
    order = np.random.default_rng(0).permutation(len(ids))
    assert (hash_selection_mask(ids[order], labels[order], 0.25, seed=3) == held[order]).all(), "order-free"
    assert [int(held[labels == label].sum()) for label in range(3)] == [50, 20, 5], "the stratified rule's counts"
    assert (hash_selection_mask(ids, labels, 0.25, seed=4) != held).any(), "the seed draws another split"
    assert image_id({"bytes": b"abc", "path": "x.png"}) == image_id(b"abc") != image_id(b"abd")
    with pytest.raises(DataError, match="Class '1'"):
        hash_selection_mask(ids[:202], labels[:202], 0.25, class_names=["0", "1", "2"])  # 2 images of class 1


def test_a_loaded_data_set_keeps_the_stratified_rule_by_default(parquet_dir):
    data = prepare_data(DataArguments(dataset_name=parquet_dir), None)
    labels = np.asarray(data.splits["train"]["label"])
    held = data.hold_out_selection(0.375, seed=0)
    assert held.info["selection_split"]["rule"].startswith("stratified")
    expected = data.splits["train"].select(np.flatnonzero(selection_mask(labels, 0.375, 0)))
    assert held.splits["selection"]["image"] == expected["image"]


def test_what_a_stream_cannot_do_fails_with_the_flag_to_drop(parquet_dir, tmp_path):
    streamed = prepare_data(DataArguments(dataset_name=parquet_dir, streaming=True), None)
    with pytest.raises(DataError, match="--selection_rule hash"):
        streamed.hold_out_selection(0.375, rule="stratified")
    default = ProbeArguments(protocol="default")
    refused = {
        "--shots_per_class": (DataArguments(streaming=True, shots_per_class=2), default),
        "--episodes": (DataArguments(streaming=True, shots_per_class=2, episodes=2), default),
        "--skip_unreadable": (DataArguments(streaming=True, skip_unreadable=True), default),
        "--selection_rule stratified": (DataArguments(streaming=True, selection_rule="stratified"), default),
        "--cache_per_node": (DataArguments(streaming=True, cache_per_node=True), default),
        "--seeds": (DataArguments(streaming=True, use_token_cache=False), ProbeArguments(seeds=[0, 1])),
    }
    for flag, (data_args, probe_args) in refused.items():
        with pytest.raises(ValueError, match=flag):
            check_arguments(data_args, probe_args)
    check_arguments(DataArguments(streaming=True), ProbeArguments(protocol="default", seeds=[0, 1]))  # from the cache
    with pytest.raises(ValueError, match="drop --selection_rule"):
        check_arguments(DataArguments(shots_per_class=2, episodes=2, selection_rule="hash"), default)
    videos = tmp_path / "videos"
    for split in ("train", "validation"):
        for name in ("a", "b"):
            (videos / split / name).mkdir(parents=True)
            (videos / split / name / "clip.mp4").write_bytes(b"not read")
    with pytest.raises(DataError, match="video data cannot be streamed"):
        prepare_data(DataArguments(dataset_name=str(videos), streaming=True), None)


def test_a_streamed_extraction_resumes_after_its_last_durable_shard(backbone_dir, parquet_dir, tmp_path, monkeypatch):  # noqa: F811
    data = prepare_data(
        DataArguments(dataset_name=parquet_dir, streaming=True), ViTImageProcessor.from_pretrained(backbone_dir)
    )
    model = AutoModelForEfficientProbing.from_backbone(load_backbone(backbone_dir), probe="linear", num_labels=3)
    options = dict(cache_root=tmp_path / "cache", shard_size=5, batch_size=2, progress=False, num_workers=0)
    real_part = StreamedImages.part

    def dies_after_two_shards(self, rank, world_size, start=0):
        for count, item in enumerate(real_part(self, rank, world_size, start)):
            if count == 10:
                raise KeyboardInterrupt("killed")
            yield item

    monkeypatch.setattr(StreamedImages, "part", dies_after_two_shards)
    with pytest.raises(KeyboardInterrupt):
        data.token_cache("train", model, ExtractionOptions(**options))
    monkeypatch.setattr(StreamedImages, "part", real_part)
    seen = count_backbone_rows(model.backbone)
    view = data.token_cache("train", model, ExtractionOptions(**options))
    assert view.extraction_report["images"] == 24 - 10 and sum(seen) == 14, "the two durable shards are kept"
    (cache,) = view.groups
    assert cache.manifest["stream"]["rows_per_process"] == [24]
    assert complete_layer_groups(tmp_path / "cache", _key_of(cache)), "an ordinary layer group of its source"
    fresh = data.token_cache("train", model, ExtractionOptions(**{**options, "cache_root": tmp_path / "fresh"}))
    torch.testing.assert_close(all_rows(cache), all_rows(fresh.groups[0]), rtol=0, atol=0)
    assert all_rows(cache)[1].tolist() == data.splits["train"].labels.tolist()
    train = data.splits["train"]
    assert replace(train, part_sizes=(12, 12))._fingerprint != train._fingerprint, "the parts name the cache"
    again = data.token_cache("train", model, ExtractionOptions(**options))
    assert again.extraction_report["reused"] and sum(seen) == 14 + 24, "reused (the 24 rows: the fresh cache's)"
    shard = cache.directory / cache.shards[2].file
    shard.write_bytes(shard.read_bytes()[:-1] + b"x")  # altered: the shards before it are kept, those after redone
    repaired = data.token_cache("train", model, ExtractionOptions(**options))
    assert repaired.extraction_report["images"] == 24 - 10 and sum(seen) == 14 + 24 + 14
    torch.testing.assert_close(all_rows(repaired.groups[0]), all_rows(fresh.groups[0]), rtol=0, atol=0)
    layers = [1, *model.token_reader.layers]
    wider = data.token_cache("train", model, ExtractionOptions(**options), reader=model.token_reader.reading(layers))
    assert [group.feature_layers for group in wider.groups] == [model.token_reader.layers, (1,)]
    assert sum(seen) == 14 + 24 + 14 + 24, "a new layer: one more pass, for that layer only"


def _key_of(cache: TokenCache) -> TokenCacheKey:
    return TokenCacheKey(**{**cache.key, "feature_layers": tuple(cache.key["feature_layers"])})


@pytest.mark.slow
def test_live_training_reads_the_stream(backbone_dir, parquet_dir, tmp_path):  # noqa: F811
    output = tmp_path / "out"
    _load_script().main(_args(backbone_dir, parquet_dir, output, "--probe", "linear", "--streaming"))
    summary = json.loads((output / "run_summary.json").read_text())
    results = json.loads((output / "all_results.json").read_text())
    assert summary["streaming"] == {"processes": 1} and summary["train_samples"] == 24
    assert summary["optimizer_steps"] == 6 and results["eval_samples"] == 15


@pytest.mark.slow
def test_the_default_protocol_trains_live_on_the_stream(backbone_dir, parquet_dir, tmp_path):  # noqa: F811
    """--use_token_cache false: the grid reads the streamed images, chooses on the held-out stream, evaluates once."""
    cache = tmp_path / "cache"
    streamed = _run(backbone_dir, parquet_dir, tmp_path / "out", cache, "--streaming", "--use_token_cache", "false")
    assert streamed["augmentation"].startswith("RandomResizedCrop") and not cache.exists(), "nothing cached"
    assert (streamed["selection_samples"], streamed["train_samples"]) == (9, 15)
    results = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert results["eval_samples"] == 15 and streamed["optimizer_steps"] > 0


@pytest.mark.slow
def test_two_processes_each_stream_and_cache_their_own_part(backbone_dir, parquet_dir, tmp_path):  # noqa: F811
    """Under ``accelerate launch`` with 2 processes each rank counts and extracts its own parquet file: the cache
    holds both parts (rank 0's first), the selection split is the one process's, and the rows are the same images."""
    output, cache = tmp_path / "two", tmp_path / "cache"
    command = [*LAUNCH, str(SCRIPT), *_args(backbone_dir, parquet_dir, output, *DEFAULT_RUN, "--streaming",
               "--token_cache_dir", str(cache), "--ddp_backend", "gloo", "--per_device_train_batch_size", "4")]  # fmt: skip
    completed = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads((output / "run_summary.json").read_text())
    assert summary["streaming"] == {"processes": 2} and summary["world_size"] == 2
    whole = prepare_data(DataArguments(dataset_name=parquet_dir, streaming=True), None)
    one = whole.hold_out_selection(0.375)
    assert summary["selection_split"] == one.info["selection_split"], "the same images held out"
    kept = ~np.isin(whole.splits["train"].ids, one.splits["selection"].ids)
    train = next(TokenCache(path) for path in cache.glob("*/") if TokenCache(path).key["split"] == "train")
    parts = [int(kept[:12].sum()), int(kept[12:].sum())]  # rank r reads parquet file r: rows 12r to 12r + 11
    assert train.manifest["stream"]["rows_per_process"] == parts == train.manifest["extraction"]["images_per_process"]
    assert {shard.file[:13] for shard in train.shards} == {"shard-rank000", "shard-rank001"}
    assert all_rows(train)[1].tolist() == one.splits["train"].labels.tolist(), "rank 0's part, then rank 1's"
