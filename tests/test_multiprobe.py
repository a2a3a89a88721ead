"""Many probes on one token stream: each gets what it would get alone, cached or live, and saves as a normal probe."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import tiny_backbone
from safetensors import safe_open
from test_cache import Images, make_key, single_thread  # noqa: F401

import hf_efficient_probing as hep
from hf_efficient_probing.backbones import TokenReader
from hf_efficient_probing.cache import extract_tokens
from hf_efficient_probing.cache.multiprobe import ProbeSpec, results_table, stream_requirements, train_probes
from hf_efficient_probing.cache.streams import CachedTokens, LiveTokens, epoch_order


def sweep(backbone) -> list[ProbeSpec]:
    """Probes that differ in kind, queries, d_out, layers, tokens read, learning rate and seed."""
    config = backbone.config
    return [
        ProbeSpec(
            "ep-m4", hep.EfficientProbingConfig(backbone_config=config, num_labels=4, num_queries=4), 1e-2, seed=1
        ),
        ProbeSpec(
            "ep-m8-do2-l1",
            hep.EfficientProbingConfig(
                backbone_config=config, num_labels=4, num_queries=8, d_out=2, feature_layers=[1]
            ),
            3e-2,
            seed=2,
        ),
        ProbeSpec(
            "linear-cls", hep.LinearProbingConfig(backbone_config=config, num_labels=4, features="cls"), 1e-1, seed=3
        ),
        ProbeSpec(
            "ep-m2-two-layers",
            hep.EfficientProbingConfig(backbone_config=config, num_labels=4, num_queries=2, feature_layers=[1, 2]),
            1e-2,
            seed=4,
        ),
    ]


class LabelledImages(Images):
    def __getitem__(self, index):
        return {**super().__getitem__(index), "labels": index % 4}


@pytest.fixture
def setup(tmp_path):
    backbone = tiny_backbone("vit")
    specs = sweep(backbone)
    layers, selection = stream_requirements(specs)
    assert (layers, selection) == ([1, 2], "all")
    reader = TokenReader(backbone.config, layers, token_selection=selection)
    cache = extract_tokens(backbone, reader, LabelledImages(), make_key(backbone, reader), tmp_path, progress=False)
    return backbone, specs, CachedTokens(cache), LiveTokens(backbone, LabelledImages(), layers, selection)


def run(specs, backbone, stream, output_dir=None):
    return train_probes(specs, backbone, stream, epochs=3, batch_size=4, data_seed=7, output_dir=output_dir)


def assert_same(result, alone):
    assert (result.best_epoch, result.parameters) == (alone.best_epoch, alone.parameters)
    for epoch, epoch_alone in zip(result.history, alone.history, strict=True):
        assert epoch["top1"] == epoch_alone["top1"]
        assert epoch["train_loss"] == pytest.approx(epoch_alone["train_loss"], rel=1e-5, abs=1e-6)


def test_each_probe_of_a_multi_probe_run_equals_its_run_alone(setup, tmp_path):
    backbone, specs, cached, _ = setup
    together = run(specs, backbone, cached, tmp_path / "together")
    for spec, result in zip(specs, together, strict=True):
        alone = run([spec], backbone, cached, tmp_path / f"alone-{spec.name}")[0]
        assert_same(result, alone)
        saved = hep.AutoModelForEfficientProbing.from_pretrained(result.path).probe.state_dict()
        saved_alone = hep.AutoModelForEfficientProbing.from_pretrained(alone.path).probe.state_dict()
        for key in saved:
            torch.testing.assert_close(saved[key], saved_alone[key], rtol=1e-5, atol=1e-6)
    assert len(json.loads((tmp_path / "together" / "results.json").read_text())) == len(specs)
    assert results_table(together).count("\n") == len(specs) + 1


def test_live_stream_trains_like_the_cache(setup):
    backbone, specs, cached, live = setup
    for from_cache, from_backbone in zip(run(specs, backbone, cached), run(specs, backbone, live), strict=True):
        assert_same(from_cache, from_backbone)


def test_saved_best_probe_reproduces_its_best_top1_on_images(setup, tmp_path):
    backbone, specs, cached, _ = setup
    result = run(specs[:1], backbone, cached, tmp_path)[0]
    model = hep.AutoModelForEfficientProbing.from_pretrained(result.path)  # the unnamed backbone was saved with it
    data = LabelledImages()
    with torch.no_grad():
        predictions = model(pixel_values=data.images).logits.argmax(-1)
    labels = torch.tensor([data[i]["labels"] for i in range(len(data))])
    assert (predictions == labels).float().mean().item() == pytest.approx(result.best_top1)
    assert result.history[result.best_epoch]["top1"] == max(h["top1"] for h in result.history)


def test_epoch_order_depends_only_on_seed_and_epoch():
    torch.manual_seed(0)
    first = epoch_order(20, 1, seed=3)
    torch.manual_seed(1)
    assert epoch_order(20, 1, seed=3) == first and sorted(first) == list(range(20))
    assert epoch_order(20, 2, seed=3) != first


def test_stream_without_a_needed_layer_fails_clearly(setup):
    backbone, specs, _, _ = setup
    live = LiveTokens(backbone, LabelledImages(), [2], "all")
    with pytest.raises(ValueError, match="not \\[1\\]"):
        train_probes(specs[1:2], backbone, live, epochs=1)
    with pytest.raises(ValueError, match="unique"):
        train_probes([specs[0], specs[0]], backbone, live, epochs=1)
    normed = ProbeSpec("normed", copy.deepcopy(specs[0].config))
    normed.config.apply_final_norm = True
    with pytest.raises(ValueError, match="apply_final_norm"):
        train_probes([specs[0], normed], backbone, live, epochs=1)


def test_stream_with_the_other_final_norm_fails_clearly(setup):
    backbone, specs, cached, _ = setup
    normed = ProbeSpec("normed", copy.deepcopy(specs[0].config))
    normed.config.apply_final_norm = True  # the ViT family reads pre-norm tokens by default, as the cache holds
    with pytest.raises(
        ValueError, match="after the backbone's final norm, but the CachedTokens stream holds them before"
    ):
        train_probes([normed], backbone, cached, epochs=1)
    live_normed = LiveTokens(backbone, LabelledImages(), [2], "patch", apply_final_norm=True)
    with pytest.raises(
        ValueError, match="before the backbone's final norm, but the LiveTokens stream holds them after"
    ):
        train_probes(specs[:1], backbone, live_normed, epochs=1)


def test_cached_training_needs_no_backbone_weights(setup, saved_backbone, tmp_path):
    backbone, specs, cached, live = setup
    with_backbone = run(specs, backbone, cached)
    named = [ProbeSpec(s.name, copy.deepcopy(s.config), s.learning_rate, s.weight_decay, s.seed) for s in specs]
    for spec in named:
        spec.config.backbone_name_or_path = saved_backbone("vit")
    without = run(named, None, cached, tmp_path / "probes")
    for a, b in zip(with_backbone, without, strict=True):
        assert_same(a, b)
    with safe_open(str(tmp_path / "probes" / specs[0].name / "model.safetensors"), framework="pt") as saved:
        assert all(key.startswith("probe.") for key in saved.keys()), "probe-only checkpoints"
    reloaded = hep.AutoModelForEfficientProbing.from_pretrained(without[0].path)
    assert reloaded.backbone.embeddings.patch_embeddings.projection.weight.device.type == "cpu"
    with pytest.raises(ValueError, match="live token stream"):
        train_probes(specs, None, live, epochs=1)
    with pytest.raises(ValueError, match="name no backbone"):
        train_probes(specs, None, cached, epochs=1, output_dir=tmp_path / "unnamed")
