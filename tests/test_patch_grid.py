"""The one patch-grid helper: sizes as an int or a pair, a grid inferred only when it is square, clear errors."""

import pytest
import torch
from conftest import tiny_backbone

import hf_efficient_probing as hep
from hf_efficient_probing.probes.patch_grid import as_pair, patch_grid


def test_sizes_are_an_int_or_a_pair():
    assert as_pair(14) == (14, 14) and as_pair([16, 12]) == (16, 12)
    with pytest.raises(ValueError, match="an int or a \\(height, width\\) pair"):
        as_pair((3, 224, 224))


def test_a_grid_is_inferred_only_when_square():
    assert patch_grid(16, None, "cbam") == (4, 4)
    assert patch_grid(12, (3, 4), "cbam") == (3, 4)
    with pytest.raises(ValueError, match="cbam .* 15 patch tokens do not form a square grid; pass grid_size"):
        patch_grid(15, None, "cbam")
    with pytest.raises(ValueError, match="grid_size \\(4, 4\\) does not match the 12 patch tokens"):
        patch_grid(12, (4, 4), "cbam")


def test_tokens_of_no_known_grid_need_an_explicit_one():
    torch.manual_seed(0)
    tokens = torch.randn(2, 15, 32)  # neither the backbone's native 4x4 grid nor any square
    cbam = hep.AutoModelForEfficientProbing.from_backbone(tiny_backbone("vit"), probe="cbam", num_labels=3).eval()
    with pytest.raises(ValueError, match="15 patch tokens do not form a square grid; pass grid_size"):
        cbam(tokens=tokens)
    assert cbam(tokens=tokens, grid_size=(3, 5)).logits.shape == (2, 3)
    ep = hep.AutoModelForEfficientProbing.from_backbone(tiny_backbone("vit"), num_labels=3, num_queries=4).eval()
    assert torch.isfinite(ep(tokens=tokens).logits).all(), "EP reads tokens as a set: it needs no grid"
