"""Parity with the official modules themselves (github.com/billpsomas/efficient-probing), when a copy is at hand.

Skipped unless ``EP_OFFICIAL_REPO`` points at an extracted copy of that repository (it is not vendored here). The
official code is imported with the shims of ``../shared/tools/ref_param_counts.py`` (CPU-only SimPool, no timm),
each official head is built as ``build_probe_head`` builds it, randomised (BatchNorm statistics included), and its
state dict is loaded with :func:`load_official_head`; both heads must give the same logits in eval mode.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from hf_efficient_probing.official.conversion import load_official_head

OFFICIAL_REPO = os.environ.get("EP_OFFICIAL_REPO")
SHIMS = Path(
    os.environ.get(
        "EP_OFFICIAL_SHIMS", Path(__file__).resolve().parents[2] / "shared" / "tools" / "ref_param_counts.py"
    )
)
pytestmark = pytest.mark.skipif(
    not OFFICIAL_REPO or not SHIMS.exists(), reason="set EP_OFFICIAL_REPO to an extracted official repository"
)
HIDDEN, CLASSES = 96, 5
OFFICIAL_ARGS = dict(
    num_heads=16,
    ep_queries=32,
    d_out=1,
    abmilp_sa="both",
    abmilp_act="tanh",
    abmilp_depth=2,
    abmilp_cond=None,
    abmilp_content="all",
)
NAMES = [
    "ep",
    "abmilp",
    "simpool",
    "esimpool",
    "clip",
    "siglip",
    "aim",
    "coca",
    "cait",
    "dinovit",
    "jepa",
    "dolg",
    "cae",
    "cbam",
]


@contextlib.contextmanager
def official_modules(repo: str):
    """Import the official ``probe_heads`` from an extracted repository, with the shims of ``ref_param_counts.py``."""
    spec = importlib.util.spec_from_file_location("ref_param_counts", SHIMS)
    tools = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tools)
    tools.install_shims_if_missing()
    real_tensor = torch.tensor
    tools.redirect_cuda_tensor_allocations(torch)
    sys.path.insert(0, repo)
    try:
        import probe_heads

        yield probe_heads
    finally:
        torch.tensor = real_tensor
        sys.path.remove(repo)


@pytest.fixture(scope="module")
def probe_heads():
    with official_modules(OFFICIAL_REPO) as modules:
        yield modules


def build_official_head(probe_heads, name: str, num_patches: int, hidden: int = HIDDEN, **args):
    """The official head of a pooling, built as ``main_linprobe`` builds it (``build_probe_head`` on a stub encoder)."""
    encoder = nn.Module()
    encoder.head = nn.Linear(hidden, CLASSES)
    encoder.patch_embed = types.SimpleNamespace(num_patches=num_patches)
    namespace = types.SimpleNamespace(
        **{**OFFICIAL_ARGS, **args}, cls_features=name, model="vit_base_patch16", nb_classes=CLASSES
    )
    probe_heads.build_probe_head(encoder, namespace)
    return encoder.head


def randomize_(head: nn.Module) -> nn.Module:
    """Move every tensor off its init (zero queries, unit LayerScale, fresh BatchNorm statistics), in place; fixed
    tensors (the frozen sin-cos position embedding of ABMIL) keep their values."""
    fixed = {name for name, parameter in head.named_parameters() if not parameter.requires_grad}
    with torch.no_grad():
        for key, tensor in head.state_dict().items():
            if tensor.is_floating_point() and not key.endswith("norm.beta") and key not in fixed:
                tensor.add_(torch.randn_like(tensor) * 0.1)
                if "running_var" in key:
                    tensor.abs_().add_(0.5)
    return head


@pytest.mark.parametrize("name", NAMES)
def test_official_head_logits(probe_heads, name):
    torch.manual_seed(0)
    head = randomize_(build_official_head(probe_heads, name, num_patches=196)).eval()
    tokens = torch.randn(3, 196, HIDDEN)
    with torch.no_grad():
        expected = head(tokens)
    ours = load_official_head(
        {"head." + k: v for k, v in head.state_dict().items()},
        pooling=name,
        hidden_size=HIDDEN,
        num_labels=CLASSES,
        **OFFICIAL_ARGS,
    )
    with torch.no_grad():
        logits = ours(tokens).logits
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "args",
    [
        dict(abmilp_sa="none", abmilp_depth=1),
        dict(abmilp_sa="map", abmilp_act="relu"),
        dict(abmilp_cond="pe", abmilp_content="patch"),
        dict(abmilp_cond="pe", abmilp_content="all"),
    ],
)
def test_official_abmilp_variants(probe_heads, args):
    torch.manual_seed(0)
    head = build_official_head(probe_heads, "abmilp", num_patches=16, **args).eval()
    tokens = torch.randn(2, 17, HIDDEN)  # [CLS] + a 4 x 4 grid, as the official `_all` tokens
    with torch.no_grad():
        expected = head(tokens)
        ours = load_official_head(head.state_dict(), pooling="abmilp", num_labels=CLASSES, **{**OFFICIAL_ARGS, **args})
        logits = ours(tokens, num_prefix_tokens=1, grid_size=(4, 4)).logits
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
