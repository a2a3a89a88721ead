"""The example script end to end on a tiny backbone and a tiny image folder made here: EP and linear probes,
best checkpoint saved and reloadable, resume after SIGKILL, two processes, LoRA, layer-wise, k-NN, determinism."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from transformers import Trainer, ViTImageProcessor

from hf_efficient_probing import AutoModelForEfficientProbing
from hf_efficient_probing.training import build_transforms, probing_collator
from hf_efficient_probing.training.data import ImageClassificationDataset, load_image_dataset

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "run_probing.py"
MODES = ["RGB", "L", "RGBA", "P", "CMYK"]  # the data set mixes image modes on purpose


def _load_script():
    spec = importlib.util.spec_from_file_location("run_probing", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def image_folder(tmp_path) -> str:
    """train/ and validation/ with 3 classes (a bright square on the left, the right, or none), mixed modes."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for split, per_class in (("train", 8), ("validation", 5)):
        for label, name in enumerate(["left", "right", "none"]):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 60, (36, 36, 3)).astype(np.uint8)
                if label < 2:
                    column = 2 if label == 0 else 20
                    pixels[8:24, column : column + 14] = 230
                image = Image.fromarray(pixels).convert(MODES[i % len(MODES)])
                image.save(folder / f"{i}.{'jpg' if image.mode == 'CMYK' else 'png'}")
    return str(root)


@pytest.fixture
def backbone_dir(saved_backbone) -> str:
    path = saved_backbone("vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def _args(backbone_dir, image_folder, output_dir, *extra):
    return [
        "--model_name_or_path", backbone_dir, "--dataset_name", image_folder, "--output_dir", str(output_dir),
        "--num_train_epochs", "2", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "6",
        "--base_learning_rate", "20", "--warmup_epochs", "0", "--use_cpu", "--disable_tqdm", "true",
        "--dataloader_num_workers", "0", *extra,
    ]  # fmt: skip


def _evaluate(model, image_folder) -> float:
    dataset, image_column, label_column = load_image_dataset(image_folder)
    _, eval_transform = build_transforms(ViTImageProcessor(size={"height": 32, "width": 32}))
    items = ImageClassificationDataset(dataset["validation"], image_column, label_column, eval_transform)
    batch = probing_collator([items[i] for i in range(len(items))])
    with torch.no_grad():
        logits = model.eval()(pixel_values=batch["pixel_values"]).logits
    return (logits.argmax(-1) == batch["labels"]).float().mean().item()


@pytest.mark.parametrize("probe", ["ep", "linear"])
def test_script_trains_saves_best_probe_and_results(probe, backbone_dir, image_folder, tmp_path):
    output = tmp_path / "out"
    extra = ["--probe", probe] + (["--num_queries", "4"] if probe == "ep" else [])
    _load_script().main(_args(backbone_dir, image_folder, output, *extra))
    results = json.loads((output / "all_results.json").read_text())
    assert 0 <= results["eval_accuracy"] <= 1 and results["eval_accuracy"] <= results["eval_top5_accuracy"] == 1.0
    summary = json.loads((output / "run_summary.json").read_text())
    assert summary["probe"] == probe and summary["best_epoch"] in (1.0, 2.0) and summary["optimizer_steps"] == 6
    best = max(summary["per_epoch"], key=lambda e: e["eval_accuracy"])["eval_accuracy"]
    assert results["eval_accuracy"] == best  # the saved probe is the best epoch's
    assert (output / "run_summary.md").exists()
    leftovers = [
        p.name for p in output.rglob("*") if p.suffix in (".bin", ".pt", ".pth") or p.name.startswith("checkpoint-")
    ]
    assert leftovers == []  # no pickles, no checkpoints in the final probe directory
    reloaded = AutoModelForEfficientProbing.from_pretrained(str(output))
    assert reloaded.config.backbone_name_or_path == backbone_dir  # probe-only checkpoint, backbone re-attached
    assert _evaluate(reloaded, image_folder) == pytest.approx(results["eval_accuracy"])


def test_early_stopping_on_a_plateau(backbone_dir, image_folder, tmp_path):
    output = tmp_path / "out"
    # no epoch can improve accuracy by more than 1.0: with patience 1 the run stops after its second evaluation
    _load_script().main(_args(backbone_dir, image_folder, output, "--probe", "linear", "--num_train_epochs", "5",
                              "--early_stopping_patience", "1", "--early_stopping_threshold", "1.0"))  # fmt: skip
    summary = json.loads((output / "run_summary.json").read_text())
    assert len(summary["per_epoch"]) == 2 and summary["best_epoch"] == 1.0


def test_layerwise_low_shot_and_knn(backbone_dir, image_folder, tmp_path):
    output = tmp_path / "out"
    argv = _args(backbone_dir, image_folder, output, "--probe", "linear", "--feature_layers", "1", "2", "--layerwise",
                 "--shots_per_class", "4", "--num_train_epochs", "1", "--knn_eval", "--knn_k", "1", "3",
                 "--knn_temperatures", "0.07", "0.5")  # fmt: skip
    results = _load_script().main(argv)
    assert set(results) == {"layer_1", "layer_2", "knn"}
    for layer in (1, 2):
        config = json.loads((output / f"layer_{layer}" / "config.json").read_text())
        assert config["feature_layers"] == [layer]
        assert json.loads((output / f"layer_{layer}" / "all_results.json").read_text())["train_samples"] == 12
    knn = json.loads((output / "knn_results.json").read_text())
    assert {(r["k"], r["temperature"]) for r in knn["sweep"]} == {(1, 0.07), (3, 0.07), (1, 0.5), (3, 0.5)}


def test_knn_reads_the_token_cache(backbone_dir, image_folder, tmp_path):
    knn_args = ("--probe", "linear", "--num_train_epochs", "1", "--knn_eval", "--knn_features", "gap")
    _load_script().main(_args(backbone_dir, image_folder, tmp_path / "live", *knn_args))
    cache = tmp_path / "cache"
    _load_script().main(_args(backbone_dir, image_folder, tmp_path / "cached", *knn_args, "--use_token_cache",
                              "--token_cache_dir", str(cache)))  # fmt: skip
    live, cached = (json.loads((tmp_path / run / "knn_results.json").read_text()) for run in ("live", "cached"))
    assert [r["top1"] for r in cached["sweep"]] == pytest.approx([r["top1"] for r in live["sweep"]])
    assert (
        len(list(cache.glob("*/manifest.json"))) == 4
    )  # train/validation tokens of the probe ([CLS]) and of k-NN (GAP)


def test_lora_adapter_and_probe_saved_together(backbone_dir, image_folder, tmp_path):
    output = tmp_path / "out"
    argv = _args(backbone_dir, image_folder, output, "--probe", "ep", "--num_queries", "4", "--lora_rank", "2",
                 "--num_train_epochs", "1")  # fmt: skip
    results = _load_script().main(argv)
    assert (output / "backbone_adapter" / "adapter_model.safetensors").exists()
    with safe_open(output / "model.safetensors", "pt") as checkpoint:  # the probe only: the adapter is beside it
        assert all(key.startswith("probe.") for key in checkpoint.keys())
    reloaded = AutoModelForEfficientProbing.from_pretrained(str(output))
    assert reloaded.config.backbone_adapter == "backbone_adapter"
    assert not any(p.requires_grad for p in reloaded.backbone.parameters())
    assert _evaluate(reloaded, image_folder) == pytest.approx(results["eval_accuracy"])
    reloaded.save_pretrained(tmp_path / "again")  # e.g. to publish it: the adapter goes along
    again = AutoModelForEfficientProbing.from_pretrained(str(tmp_path / "again"))
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(again(pixel_values=images).logits, reloaded(pixel_values=images).logits)
    original = AutoModelForEfficientProbing.from_backbone(backbone_dir, probe="ep", num_labels=3, num_queries=4)
    merged = reloaded.backbone.merge_and_unload().state_dict()
    moved = [name for name, value in merged.items() if not torch.equal(value, original.backbone.state_dict()[name])]
    assert moved and all("q_proj" in name or "v_proj" in name for name in moved)  # the trained LoRA updates


@pytest.mark.slow
def test_embedded_default_is_deterministic(tmp_path):
    from hf_efficient_probing.training import run_embedded_default

    def run(name):
        results = run_embedded_default(str(tmp_path / name), kind="synthetic", num_train_epochs=1)
        return {
            probe: {k: v for k, v in m.items() if "runtime" not in k and "per_second" not in k}
            for probe, m in results.items()
        }

    first = run("a")
    assert first == run("b")
    assert set(first) == {"ep", "linear"}


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


@pytest.mark.slow
def test_two_processes_with_accelerate(backbone_dir, image_folder, tmp_path):
    output = tmp_path / "out"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(SCRIPT),
               *_args(backbone_dir, image_folder, output, "--probe", "linear", "--ddp_backend", "gloo",
                      "--num_train_epochs", "1", "--per_device_train_batch_size", "4", "--keep_checkpoints")]  # fmt: skip
    completed = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((output / "all_results.json").read_text())
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == 3  # 24 images / (4 per process x 2 processes)
    assert json.loads((output / "run_summary.json").read_text())["world_size"] == 2
    # 15 validation images over 2 processes: a duplicated or dropped image would change the accuracy.
    reloaded = AutoModelForEfficientProbing.from_pretrained(str(output))
    assert _evaluate(reloaded, image_folder) == pytest.approx(results["eval_accuracy"])


@pytest.mark.slow
def test_sigkill_mid_training_resumes_to_the_same_step_count(backbone_dir, image_folder, tmp_path):
    output = tmp_path / "out"
    argv = _args(backbone_dir, image_folder, output, "--probe", "linear", "--num_train_epochs", "6",
                 "--per_device_train_batch_size", "4")  # fmt: skip
    command = [sys.executable, str(SCRIPT), *argv]
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (output / "checkpoint-12" / "trainer_state.json").exists():  # the end of epoch 2 of 6
            assert process.poll() is None and time.time() < deadline, "the run ended before it could be killed"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    assert not (output / "all_results.json").exists()
    completed = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr[-3000:]
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == 36  # 6 epochs x 24 images / 4: nothing lost, nothing repeated
    assert state["best_model_checkpoint"] and (output / "model.safetensors").exists()
    summary = json.loads((output / "run_summary.json").read_text())
    assert len(summary["per_epoch"]) == 6 and summary["best_epoch"] is not None


def test_best_probe_reload_reports_no_missing_backbone_keys(backbone_dir, image_folder, tmp_path, monkeypatch):
    """The best epoch's probe-only checkpoint is reloaded at the end, and the Trainer is told of no missing key:
    the backbone's keys, absent from the checkpoint by design, are not reported as missing."""
    reported = []
    monkeypatch.setattr(Trainer, "_issue_warnings_after_load", lambda self, result: reported.append(result))
    _load_script().main(_args(backbone_dir, image_folder, tmp_path / "out", "--probe", "linear"))
    assert len(reported) == 1, "the best checkpoint was not reloaded at the end of training"
    assert reported[0].missing_keys == [] and reported[0].unexpected_keys == []
