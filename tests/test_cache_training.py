"""`run_probing` (default protocol): the grid trains on cached tokens, the cache reused by the next run."""

from __future__ import annotations

import json

import torch
from test_cache import single_thread  # noqa: F401

import hf_efficient_probing as hep
from hf_efficient_probing.cache import TokenCache
from hf_efficient_probing.demo import embedded_training_arguments, offline_inputs
from hf_efficient_probing.training.arguments import DataArguments, ModelArguments, ProbeArguments
from hf_efficient_probing.training.job import run_probing


def test_run_probing_trains_from_the_token_cache_and_reuses_it(tmp_path):
    cache_dir = tmp_path / "tokens"
    data_args = DataArguments(shots_per_class=4, max_eval_samples=8, token_cache_dir=str(cache_dir))
    probe_args = ProbeArguments(probe="ep", num_queries=4, feature_layers=[-1], learning_rates=[1e-2, 1e-1])

    def run(name):
        args = embedded_training_arguments(str(tmp_path / name), num_train_epochs=2, warmup_epochs=0)
        model_args = ModelArguments()  # no backbone, no data set named: the synthetic demo's
        return run_probing(model_args, data_args, probe_args, args, *offline_inputs(model_args, data_args))

    metrics = run("first")
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    report = json.loads((tmp_path / "first" / "run_summary.json").read_text())["token_cache"]
    assert (
        report["images"] == 2 * 8 + 2 * 8 + 8 and not report["reused"]
    )  # train, selection (2 per class), eval and report["processes"] == 1
    assert report["compute_dtype"] in ("float32", "bfloat16") and report["storage_dtype"] == "float16"
    assert f"{report['images']} images extracted" in (tmp_path / "first" / "run_summary.md").read_text()
    caches = sorted(path for path in cache_dir.iterdir())
    assert len(caches) == 3, "one cache per split: train, selection, validation"
    stamps = {path: (path / "manifest.json").stat().st_mtime_ns for path in caches}
    run("second")
    assert json.loads((tmp_path / "second" / "run_summary.json").read_text())["token_cache"]["reused"]
    assert "reused an existing cache" in (tmp_path / "second" / "run_summary.md").read_text()
    assert sorted(cache_dir.iterdir()) == caches
    assert {path: (path / "manifest.json").stat().st_mtime_ns for path in caches} == stamps, "reused, not rebuilt"

    model = hep.AutoModelForEfficientProbing.from_pretrained(tmp_path / "first")
    validation = next(TokenCache(path) for path in caches if TokenCache(path).key["split"] == "validation")
    validation = validation.dataset(token_selection="patch")  # what the EP probe reads
    tokens = torch.stack([validation[i]["tokens"] for i in range(len(validation))])
    with torch.no_grad():
        assert model(tokens=tokens).logits.shape == (len(validation), 8)


def test_an_ep_run_then_a_linear_run_runs_the_backbone_once(tmp_path):
    """As a new user: ``--probe ep``, then ``--probe linear`` (the [CLS] token) on the same data and layers; the
    second run reads the first one's caches (patch and [CLS] readers share them): no backbone forward at all."""
    data_args = DataArguments(shots_per_class=3, max_eval_samples=4, token_cache_dir=str(tmp_path / "tokens"))
    model_args = ModelArguments()
    inputs = offline_inputs(model_args, data_args)
    (backbone, _), _ = inputs
    forwards = []
    backbone.register_forward_hook(lambda *_: forwards.append(1))

    def run(name, kind):
        probe_args = ProbeArguments(probe=kind, feature_layers=[-1], learning_rates=[1e-1])
        args = embedded_training_arguments(str(tmp_path / name), num_train_epochs=1, warmup_epochs=0)
        run_probing(model_args, data_args, probe_args, args, *inputs)
        return json.loads((tmp_path / name / "run_summary.json").read_text())["token_cache"]

    first = run("ep", "ep")
    passes = len(forwards)
    assert passes and not first["reused"]
    second = run("linear", "linear")
    assert len(forwards) == passes, "the linear run ran the backbone again"
    assert second["reused"] and second["images"] == 0


def test_token_dtype_chooses_the_caches_storage(tmp_path):
    cache_dir = tmp_path / "tokens"
    data_args = DataArguments(shots_per_class=3, max_eval_samples=4, token_cache_dir=str(cache_dir), token_dtype="int8")
    model_args = ModelArguments()
    probe_args = ProbeArguments(probe="linear", feature_layers=[-1], learning_rates=[1e-1])
    args = embedded_training_arguments(str(tmp_path / "run"), num_train_epochs=1, warmup_epochs=0)
    run_probing(model_args, data_args, probe_args, args, *offline_inputs(model_args, data_args))
    assert json.loads((tmp_path / "run" / "run_summary.json").read_text())["token_cache"]["storage_dtype"] == "int8"
    assert {TokenCache(path).key["dtype"] for path in cache_dir.iterdir()} == {"int8"}
