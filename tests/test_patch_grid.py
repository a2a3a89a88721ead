"""The one patch-grid helper: sizes as an int or a pair, a grid inferred only when it is square, clear errors."""

import pytest
import torch
from conftest import tiny_backbone

import hf_efficient_probing as hep
from hf_efficient_probing.probes import build_pooling
from hf_efficient_probing.probes.patch_grid import as_pair, frame_grid, patch_grid


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


def test_a_clip_grid_is_frames_rows_columns():
    assert frame_grid(16, None, "cbam") == (1, 4, 4)  # no grid: the square image grid
    assert frame_grid(24, (2, 3, 4), "cbam") == (2, 3, 4) and frame_grid(12, (3, 4), "cbam") == (1, 3, 4)
    assert patch_grid(12, (1, 3, 4), "clip") == (3, 4)  # one token frame is an image
    with pytest.raises(ValueError, match="grid_size \\(2, 3, 4\\) does not match the 12 patch tokens"):
        frame_grid(12, (2, 3, 4), "cbam")


@pytest.mark.parametrize("name", ["cbam", "dolg"])
def test_grid_poolings_read_a_clip_frame_by_frame(name):
    """A clip whose token frames all repeat one image pools as that image does: the spatial attention runs on each
    frame's own grid, in frame order."""
    torch.manual_seed(0)
    pooling = build_pooling(name, 32).eval()
    image = torch.randn(2, 1 + 12, 32)  # [CLS] + a 3x4 grid
    clip = torch.cat([image[:, :1], image[:, 1:].repeat(1, 3, 1)], dim=1)  # [CLS] + 3 frames of it
    with torch.no_grad():
        alone = pooling(image, num_prefix_tokens=1, grid_size=(3, 4))
        together = pooling(clip, num_prefix_tokens=1, grid_size=(3, 3, 4))
    torch.testing.assert_close(together.pooled, alone.pooled)
    torch.testing.assert_close(together.attentions[..., 1:], alone.attentions[..., 1:].repeat(1, 1, 3))


@pytest.mark.parametrize("name, kwargs", [("clip", {}), ("abmilp", {"cond": "pe"})])
def test_poolings_on_one_2d_grid_refuse_a_clip(name, kwargs):
    pooling = build_pooling(name, 32, **kwargs)
    with pytest.raises(ValueError, match="cannot read the space-time tokens of a video clip \\(2x3x4"):
        pooling(torch.randn(1, 24, 32), grid_size=(2, 3, 4))
