"""``hf-probe verify``: a head whose BatchNorm statistics and top-1 come from a known tiny backbone passes on that
backbone and fails on a perturbed copy of it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_script import hf_probe
from conftest import tiny_backbone
from PIL import Image
from transformers import ViTImageProcessor

from hf_efficient_probing import AutoModelForEfficientProbing
from hf_efficient_probing.official.release import OFFICIAL_HEAD
from hf_efficient_probing.official.verify import image_sample, verify, verify_probe
from hf_efficient_probing.official.verify import main as verify_main

PROCESSOR = ViTImageProcessor(size={"height": 32, "width": 32})


def labelled_folder(root: Path, per_class: int = 20) -> Path:
    """An ImageFolder of two classes a tiny random ViT tells apart: reddish and bluish noise."""
    generator = np.random.default_rng(0)
    for name, colour in (("reddish", (200, 40, 40)), ("bluish", (40, 40, 200))):
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            pixels = np.clip(np.array(colour) + generator.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.png")
    return root


def probe_on(backbone_dir: Path, probe_state: dict | None = None):
    model = AutoModelForEfficientProbing.from_backbone(
        str(backbone_dir), probe="ep", num_queries=4, num_labels=2, id2label={0: "bluish", 1: "reddish"}
    ).eval()
    if probe_state is not None:
        model.probe.load_state_dict(probe_state)
    return model


@torch.no_grad()
def head_trained_on(model, images: list[tuple[Path, str]]) -> float:
    """Give ``model``'s head the statistics of its pooled features over ``images`` (as a BatchNorm that saw them) and
    a nearest-class-mean classifier on them; returns its top-1 there (percent)."""
    features = []
    for path, _ in images:
        read = model.read_tokens(**PROCESSOR(Image.open(path), return_tensors="pt"))
        features.append(model.probe.pooling(read.tokens, num_prefix_tokens=0, grid_size=read.grid_size).pooled)
    features = torch.cat(features)
    model.probe.norm.running_mean.copy_(features.mean(0))
    model.probe.norm.running_var.copy_(features.var(0))
    normed = model.probe.norm(features)
    label_of = {name: index for index, name in model.config.id2label.items()}
    labels = torch.tensor([label_of[folder] for _, folder in images])
    means = torch.stack([normed[labels == label].mean(0) for label in range(2)])
    model.probe.classifier.weight.copy_(means)
    model.probe.classifier.bias.copy_(-0.5 * (means**2).sum(1))
    return 100 * float((model.probe.classifier(normed).argmax(-1) == labels).float().mean())


def save_probe(model, folder: Path, top1: float) -> Path:
    model.save_pretrained(folder)
    PROCESSOR.save_pretrained(folder)
    (folder / OFFICIAL_HEAD).write_text(json.dumps({"meta": {"val_acc1_at_head_epoch": top1}}))
    return folder


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """A backbone, a perturbed copy (every weight moved by ``noise`` times a standard normal), the images, and a
    probe whose head was trained on the backbone's features (built once: the tests only read them)."""
    tmp_path = tmp_path_factory.mktemp("verify")
    data = labelled_folder(tmp_path / "val")
    tiny_backbone("vit").save_pretrained(tmp_path / "backbone")
    model = probe_on(tmp_path / "backbone")
    top1 = head_trained_on(model, image_sample(data, 0))
    assert top1 == 100.0, "the two classes are apart in the tiny backbone's features"

    def perturbed(noise: float) -> Path:
        other = tiny_backbone("vit")
        with torch.no_grad():
            for parameter in other.parameters():
                parameter.add_(noise * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)))
        other.save_pretrained(tmp_path / f"perturbed-{noise}")
        return tmp_path / f"perturbed-{noise}"

    return data, model, top1, perturbed


def test_verify_passes_on_the_backbone_the_head_was_trained_on(setting, tmp_path):
    data, model, top1, _ = setting
    probe = save_probe(model, tmp_path / "probe", top1)
    verification = verify(str(probe), data, num_images=0)
    assert verification.passed and [check.name for check in verification.checks] == [
        "BatchNorm mean",
        "BatchNorm variance",
        "top-1",
    ]
    assert verification.checks[0].value < 1e-3 and verification.num_images == 40
    printed = hf_probe("verify", str(probe), "--data_dir", str(data), "--num_images", "30")
    assert "verdict on 30 images: MATCH" in printed and "top-1: 100.00 % against the expected 100.00 %" in printed


def test_verify_fails_on_a_perturbed_backbone(setting, tmp_path, capsys):
    data, model, top1, perturbed = setting
    wrong = save_probe(probe_on(perturbed(0.1), model.probe.state_dict()), tmp_path / "wrong", top1)
    verification = verify(str(wrong), data, num_images=0)
    assert not verification.passed and not any(check.passed for check in verification.checks)
    with pytest.raises(SystemExit) as exited:
        verify_main([str(wrong), "--data_dir", str(data)])
    assert exited.value.code == 1 and "MISMATCH: this backbone does not give the features" in capsys.readouterr().out


def test_the_statistics_see_a_perturbation_the_top1_does_not(setting):
    """A small perturbation leaves the top-1 of this easy task intact, but not the features' statistics."""
    data, model, top1, perturbed = setting
    slightly = probe_on(perturbed(0.02), model.probe.state_dict())
    mean, variance, accuracy = verify_probe(slightly, PROCESSOR, image_sample(data, 0), expected_top1=top1).checks
    assert accuracy.passed and not mean.passed and mean.value > 2 * mean.tolerance


def test_the_top1_is_left_out_without_a_figure_or_labels(setting, tmp_path):
    data, model, _, _ = setting
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    for index, (path, _) in enumerate(image_sample(data, 10)):
        (unlabelled / f"{index}.png").write_bytes(path.read_bytes())
    verification = verify_probe(model, PROCESSOR, image_sample(unlabelled, 0), expected_top1=100.0)
    assert [check.name for check in verification.checks] == ["BatchNorm mean", "BatchNorm variance"]
    assert verification.skipped == ("top-1: some images are not in class folders",)
    assert verify_probe(model, PROCESSOR, image_sample(data, 0)).skipped[0].startswith("top-1: no expected figure")
