"""What a probe checkpoint holds: its kind recorded in config.json, a model's config untouched by saving, older
checkpoints (no recorded kind) still loading, and the one atomic-write helper."""

import json
import shutil

import pytest
import torch
from safetensors import safe_open

import hf_efficient_probing as hep
from hf_efficient_probing.atomic import atomic_directory, atomic_write_bytes
from hf_efficient_probing.training.lora import add_lora, freeze_lora


def saved_config(directory) -> dict:
    return json.loads((directory / "config.json").read_text())


def forget_the_kind(directory) -> None:
    """Make a checkpoint look like one saved before the kind was recorded."""
    fields = saved_config(directory)
    del fields["checkpoint_kind"]
    (directory / "config.json").write_text(json.dumps(fields))


def test_each_kind_is_recorded_and_saving_leaves_the_config_alone(saved_backbone, tmp_path, images):
    model = hep.ViTForEfficientProbing.from_backbone(saved_backbone("vit"), num_labels=3, num_queries=4).eval()
    model.save_pretrained(tmp_path / "probe")
    model.save_pretrained(tmp_path / "full", save_backbone=True)
    add_lora(model, rank=2)
    freeze_lora(model)
    before = model.config.to_dict()
    model.save_pretrained(tmp_path / "adapter")
    assert model.config.to_dict() == before, "saving changed the model's config"
    assert model.config.backbone_adapter is None and model.config.checkpoint_kind is None

    assert saved_config(tmp_path / "probe")["checkpoint_kind"] == "probe"
    assert saved_config(tmp_path / "full")["checkpoint_kind"] == "full"
    assert saved_config(tmp_path / "adapter")["checkpoint_kind"] == "probe_with_adapter"
    assert saved_config(tmp_path / "adapter")["backbone_adapter"] == "backbone_adapter"
    with safe_open(tmp_path / "adapter" / "model.safetensors", "pt") as weights:
        assert all(key.startswith("probe.") for key in weights.keys())
    reloaded = hep.AutoModelForEfficientProbing.from_pretrained(tmp_path / "adapter")
    assert reloaded.config.checkpoint_kind == "probe_with_adapter" and hasattr(reloaded.backbone, "peft_config")
    assert torch.allclose(reloaded(pixel_values=images).logits, model(pixel_values=images).logits, atol=1e-6)


@pytest.mark.parametrize("save_backbone", [False, True])
def test_checkpoints_saved_before_the_kind_was_recorded_still_load(saved_backbone, tmp_path, images, save_backbone):
    backbone = saved_backbone("vit")
    model = hep.ViTForEfficientProbing.from_backbone(backbone, num_labels=3, num_queries=4).eval()
    model.save_pretrained(tmp_path / "old", save_backbone=save_backbone)
    forget_the_kind(tmp_path / "old")
    if save_backbone:  # a full checkpoint holds its backbone: loading must not need the one the config names
        shutil.rmtree(backbone)
    loaded = hep.AutoModelForEfficientProbing.from_pretrained(tmp_path / "old")
    assert torch.equal(loaded(pixel_values=images).logits, model(pixel_values=images).logits)


def test_the_recorded_kind_is_what_loading_follows(saved_backbone, tmp_path):
    model = hep.ViTForEfficientProbing.from_backbone(saved_backbone("vit"), num_labels=3, num_queries=4)
    model.save_pretrained(tmp_path / "full", save_backbone=True)
    fields = saved_config(tmp_path / "full")
    (tmp_path / "full" / "config.json").write_text(json.dumps({**fields, "checkpoint_kind": "probe"}))
    with pytest.raises(ValueError, match="does not hold this probe.*unexpected: \\['backbone"):
        hep.AutoModelForEfficientProbing.from_pretrained(tmp_path / "full")
    (tmp_path / "full" / "config.json").write_text(json.dumps({**fields, "checkpoint_kind": "half"}))
    with pytest.raises(Exception, match="checkpoint_kind must be one of"):
        hep.AutoModelForEfficientProbing.from_pretrained(tmp_path / "full")


def test_atomic_writes_replace_whole_or_not_at_all(tmp_path):
    atomic_write_bytes(tmp_path / "file", b"old")
    atomic_write_bytes(tmp_path / "file", b"new")
    assert (tmp_path / "file").read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["file"]

    with pytest.raises(RuntimeError, match="killed"):
        with atomic_directory(tmp_path / "folder") as staging:
            (staging / "half").write_text("written")
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"], "a failed folder leaves nothing behind"
    with atomic_directory(tmp_path / "folder") as staging:
        (staging / "whole").write_text("written")
    assert [p.name for p in (tmp_path / "folder").iterdir()] == ["whole"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"]
