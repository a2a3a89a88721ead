"""Linear-probe features: [CLS], GAP over patch tokens, or both."""

import pytest
import torch

from hf_efficient_probing.probes import LinearPooling, ProbeHead


def test_linear_features():
    tokens = torch.randn(2, 5, 8)  # [CLS] + 4 patches
    cls = LinearPooling(8, "cls")(tokens, num_prefix_tokens=1).pooled
    gap = LinearPooling(8, "gap")(tokens, num_prefix_tokens=1).pooled
    both = LinearPooling(8, "cls+gap")(tokens, num_prefix_tokens=1).pooled
    torch.testing.assert_close(cls, tokens[:, 0])
    torch.testing.assert_close(gap, tokens[:, 1:].mean(1))
    torch.testing.assert_close(both, torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], -1))
    torch.testing.assert_close(LinearPooling(8, "gap")(tokens[:, 1:]).pooled, gap)


def test_linear_head_shape_and_parameters():
    head = ProbeHead(LinearPooling(768, "cls"), num_labels=1000)
    assert sum(p.numel() for p in head.parameters() if p.requires_grad) == 769_000
    assert ProbeHead(LinearPooling(8, "cls+gap"), 3).classifier.in_features == 16
    assert not head.norm.affine and head.norm.eps == 1e-6


def test_cls_features_need_a_cls_token():
    with pytest.raises(ValueError, match="no prefix token"):
        LinearPooling(8, "cls")(torch.randn(2, 4, 8), num_prefix_tokens=0)
    with pytest.raises(ValueError, match="choose one of"):
        LinearPooling(8, "mean")
