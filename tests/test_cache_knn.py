"""k-NN reads the cache: global features from cached tokens equal the live ones, and feed the same k-NN."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_backbone
from test_cache import Images, extract, make_key, run, single_thread  # noqa: F401
from torch.utils.data import DataLoader

from hf_efficient_probing.backbones import TokenReader
from hf_efficient_probing.cache.features import global_features
from hf_efficient_probing.evaluation.knn import knn_classify
from hf_efficient_probing.training.protocols import live_global_features


@pytest.mark.parametrize("features", ["cls", "gap"])
def test_knn_on_cached_features_equals_knn_on_live_features(tmp_path, features):
    cache = extract(tmp_path)  # layers 1 and 2, [CLS] + patches, float32
    cached, cached_labels = global_features(cache, features, feature_layers=[-1], batch_size=4)
    loader = DataLoader(Images(), batch_size=4)
    live, live_labels = live_global_features(tiny_backbone("vit"), loader, features, feature_layers=[-1])
    torch.testing.assert_close(cached, live)
    assert torch.equal(cached_labels, live_labels)
    split = 6
    from_cache = knn_classify(cached[:split], cached_labels[:split], cached[split:], cached_labels[split:], ks=(1, 3))
    from_live = knn_classify(live[:split], live_labels[:split], live[split:], live_labels[split:], ks=(1, 3))
    assert from_cache == from_live


def test_a_patch_readers_cache_serves_cls_features(tmp_path):
    """The cache stores every token whatever its first reader read: [CLS] features come from a patch reader's cache."""
    backbone = tiny_backbone("vit")
    reader = TokenReader(backbone.config, [-1])
    cache = run(backbone, reader, make_key(backbone, reader), tmp_path)
    cached, _ = global_features(cache, "cls")
    live, _ = live_global_features(backbone, DataLoader(Images(), batch_size=4), "cls", feature_layers=[-1])
    torch.testing.assert_close(cached, live)


def test_cls_features_of_a_backbone_without_one_fail_clearly(tmp_path):
    backbone = tiny_backbone("ijepa")
    reader = TokenReader(backbone.config, [-1])
    cache = run(backbone, reader, make_key(backbone, reader), tmp_path)
    with pytest.raises(ValueError, match="reads the \\[CLS\\] token, but the backbone has none"):
        global_features(cache, "cls")
