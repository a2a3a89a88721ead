"""Shared fixtures: tiny backbones of every supported family, built from configs (no Hub access)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import AutoConfig  # noqa: E402

from hf_efficient_probing.backbones import FAMILIES, build_backbone  # noqa: E402

TINY = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8
)
FAMILY_EXTRAS = {
    "dinov2_with_registers": {"num_register_tokens": 2},
    "dinov3_vit": {"num_register_tokens": 2},
}


def tiny_backbone_config(model_type: str, **overrides):
    """A 2-layer, 32-wide backbone config of the family, for 32x32 images (a 4x4 patch grid)."""
    return AutoConfig.for_model(model_type, **{**TINY, **FAMILY_EXTRAS.get(model_type, {}), **overrides})


def tiny_backbone(model_type: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_backbone(tiny_backbone_config(model_type, **overrides)).eval()


@pytest.fixture(params=sorted(FAMILIES))
def family(request) -> str:
    """Every backbone family of the adapter table."""
    return request.param


@pytest.fixture
def saved_backbone(tmp_path):
    """Save a tiny backbone of a family to a local directory (a stand-in for a Hub id) and return its path."""

    def save(model_type: str = "vit", **overrides) -> str:
        path = tmp_path / f"backbone-{model_type}"
        tiny_backbone(model_type, **overrides).save_pretrained(path)
        return str(path)

    return save


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(4, 3, 32, 32)


@pytest.fixture
def transformers_logs(caplog):
    """`caplog` that also receives the warnings of `transformers` (its logger does not propagate by default)."""
    from transformers.utils import logging as hf_logging

    hf_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            yield caplog
    finally:
        hf_logging.disable_propagation()
