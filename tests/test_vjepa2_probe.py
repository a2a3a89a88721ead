"""V-JEPA 2's attentive probe (``vjepa2``): the pooling against `transformers`' own ``VJEPA2AttentivePooler``, and
the conversion of a ``VJEPA2ForVideoClassification`` into a probe-only checkpoint giving the same logits."""

from __future__ import annotations

import pytest
import torch
from conftest import random_clips, tiny_backbone, tiny_backbone_config
from safetensors import safe_open
from transformers import VJEPA2ForVideoClassification
from transformers.models.vjepa2.modeling_vjepa2 import VJEPA2AttentivePooler

import hf_efficient_probing as hep
from hf_efficient_probing import transformers_heads
from hf_efficient_probing.probes import ProbeHead, build_pooling


def randomised(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter drawn at random (no zero biases, no unit LayerNorms), so that every term is exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return module


@pytest.mark.parametrize("num_layers", [0, 2])
def test_pooling_equals_transformers_attentive_pooler(num_layers):
    config = tiny_backbone_config("vjepa2", num_pooler_layers=num_layers)
    config._attn_implementation = "eager"
    reference = randomised(VJEPA2AttentivePooler(config)).eval()
    pooling = build_pooling("vjepa2", 32, num_heads=4, num_self_attention_layers=num_layers).eval()
    pooling.load_state_dict(reference.state_dict())  # the same names: no key is renamed
    tokens = torch.randn(3, 20, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        output = pooling(tokens)
        torch.testing.assert_close(output.pooled, reference(tokens), rtol=1e-4, atol=1e-5)
    assert output.attentions.shape == (3, 4, 20)
    torch.testing.assert_close(output.attentions.sum(-1), torch.ones(3, 4))


def test_a_head_without_batch_norm_is_pooling_then_classifier():
    pooling = build_pooling("vjepa2", 32, num_heads=4, num_self_attention_layers=1)
    head = ProbeHead(pooling, num_labels=5, batch_norm=False).train()
    assert not any(name.startswith("norm.") for name in head.state_dict())
    tokens = torch.randn(4, 10, 32)
    output = head(tokens)
    torch.testing.assert_close(output.logits, head.classifier(output.features))
    assert any(name.startswith("norm.running") for name in ProbeHead(pooling, 5).state_dict())


def tiny_classifier(seed: int = 0) -> VJEPA2ForVideoClassification:
    config = tiny_backbone_config("vjepa2", num_pooler_layers=2, num_labels=5)
    torch.manual_seed(seed)
    classifier = VJEPA2ForVideoClassification(config).eval()
    randomised(classifier.pooler, seed)
    randomised(classifier.classifier, seed + 1)
    return classifier


def test_converted_classifier_gives_transformers_logits():
    classifier = tiny_classifier()
    probe = transformers_heads.vjepa2_probe(classifier)
    assert isinstance(probe, hep.VJEPA2ForAttentiveProbing) and probe.config.pooler_type == "vjepa2"
    assert not probe.config.batch_norm and probe.config.frames_per_clip == 4
    clips = random_clips(3)
    with torch.no_grad():
        expected = classifier(pixel_values_videos=clips).logits
        torch.testing.assert_close(probe(pixel_values=clips).logits, expected, rtol=1e-4, atol=1e-5)


def test_conversion_command_writes_a_probe_only_checkpoint(tmp_path):
    classifier = tiny_classifier(seed=3)
    classifier.save_pretrained(tmp_path / "classifier")
    transformers_heads.main([str(tmp_path / "classifier"), "--output", str(tmp_path / "probe")])
    with safe_open(str(tmp_path / "probe" / "model.safetensors"), framework="pt") as checkpoint:
        keys = set(checkpoint.keys())
    assert keys and all(key.startswith(("probe.pooling.", "probe.classifier.")) for key in keys)
    probe = hep.AutoModelForEfficientProbing.from_pretrained(tmp_path / "probe")  # re-attaches the encoder
    assert probe.config.backbone_name_or_path == str(tmp_path / "classifier")
    assert probe.config.id2label == classifier.config.id2label
    clips = random_clips(2, seed=5)
    with torch.no_grad():
        expected = classifier(pixel_values_videos=clips).logits
        torch.testing.assert_close(probe(pixel_values=clips).logits, expected, rtol=1e-4, atol=1e-5)


def test_vjepa2_probe_trains_on_other_backbones():
    """The kind is a baseline like the others: any backbone, a BatchNorm by default, gradients in the probe only."""
    model = hep.AutoModelForEfficientProbing.from_backbone(
        tiny_backbone("videomae"), probe="vjepa2", num_labels=3, pooler_kwargs={"num_heads": 4}
    )
    assert isinstance(model, hep.VideoMAEForAttentiveProbing) and model.config.batch_norm
    output = model.train()(pixel_values=random_clips(4), labels=torch.tensor([0, 1, 2, 0]))
    output.loss.backward()
    untouched = {name for name, p in model.probe.named_parameters() if p.grad is None}
    assert untouched == {"pooling.cross_attention_layer.cross_attn.k_proj.bias"}  # shifts every logit alike
    assert all(p.grad is None for p in model.backbone.parameters())
