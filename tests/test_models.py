"""The transformers heads over every backbone family: frozen backbone, loss, token layout, probe-only artifacts."""

import os

import pytest
import torch
from conftest import tiny_backbone, tiny_backbone_config
from huggingface_hub.errors import StrictDataclassClassValidationError
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForImageClassification

import hf_efficient_probing as hep
from hf_efficient_probing.backbones import FAMILIES
from hf_efficient_probing.modeling_probing import NAMED_PROBE_CLASSES, probe_class_for

PROBE_KINDS = {"ep": dict(num_queries=4), "linear": dict(features="gap")}


def named_class(kind: str, family: str):
    model_type = {"ep": "efficient_probing", "linear": "linear_probing"}[kind]
    return NAMED_PROBE_CLASSES[(model_type, family)]


def test_every_family_has_named_classes():
    for family in FAMILIES:
        for kind in PROBE_KINDS:
            assert named_class(kind, family).backbone_model_type == family
    assert hep.ViTMAEForEfficientProbing is named_class("ep", "vit_mae")
    assert hep.SiglipVisionForLinearProbing is named_class("linear", "siglip_vision_model")


@pytest.mark.parametrize("kind", sorted(PROBE_KINDS))
def test_named_class_trains_only_the_probe(family, kind, images):
    model = named_class(kind, family).from_backbone(tiny_backbone(family), num_labels=3, **PROBE_KINDS[kind])
    model.train()
    assert not model.backbone.training, "a frozen backbone stays in eval mode"
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    output = model(pixel_values=images, labels=torch.tensor([0, 1, 2, 0]))
    assert torch.isfinite(output.loss)
    output.loss.backward()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("probe.") for name in trainable)
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(model.get_parameter(name).grad is not None for name in trainable)
    optimizer.step()
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, backbone_before[key]), key


def test_named_class_rejects_another_family():
    with pytest.raises(ValueError, match="probes 'vit_mae' backbones"):
        hep.ViTMAEForEfficientProbing.from_backbone(tiny_backbone("vit"), num_labels=3, num_queries=4)


def test_generic_class_accepts_any_family():
    model = hep.VisionModelForEfficientProbing.from_backbone(tiny_backbone("beit"), num_labels=3, num_queries=4)
    assert model(pixel_values=torch.randn(2, 3, 32, 32)).logits.shape == (2, 3)
    assert probe_class_for(model.config) is hep.BeitForEfficientProbing


def test_vit_mae_reads_every_patch_in_order_deterministically(images):
    backbone = tiny_backbone("vit_mae")
    assert backbone.config.mask_ratio == 0.0
    model = hep.ViTMAEForEfficientProbing.from_backbone(backbone, num_labels=3, num_queries=4).eval()
    first = model(pixel_values=images, output_attentions=True)
    second = model(pixel_values=images, output_attentions=True)
    assert first.probe_attentions.shape == (4, 4, 16)
    assert torch.equal(first.logits, second.logits)
    assert torch.equal(first.probe_attentions, second.probe_attentions)
    # identity order: the tokens equal those of a ViT with the same weights, which never shuffles
    reference = hep.ViTForEfficientProbing.from_backbone(
        _vit_with_weights_of(backbone), num_labels=3, num_queries=4
    ).eval()
    reference.probe.load_state_dict(model.probe.state_dict())
    torch.testing.assert_close(reference(pixel_values=images).logits, first.logits, rtol=1e-4, atol=1e-5)


def _vit_with_weights_of(mae_backbone):
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        **{
            k: getattr(mae_backbone.config, k)
            for k in (
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "intermediate_size",
                "image_size",
                "patch_size",
                "layer_norm_eps",
                "qkv_bias",
            )
        }
    )
    vit = ViTModel(config, add_pooling_layer=False).eval()
    mae_state = mae_backbone.state_dict()
    vit_state = vit.state_dict()
    assert set(vit_state) - {"embeddings.mask_token"} <= set(mae_state) | {"embeddings.mask_token"}
    vit.load_state_dict({k: mae_state.get(k, v) for k, v in vit_state.items()})
    return vit


@pytest.mark.parametrize("family", ["dinov2_with_registers", "dinov3_vit", "deit"])
def test_leading_tokens_are_skipped(family, images):
    backbone = tiny_backbone(family)
    model = hep.VisionModelForLinearProbing.from_backbone(backbone, num_labels=3, features="cls+gap").eval()
    read = model.token_reader(model.backbone, images)
    full = backbone(pixel_values=images, output_hidden_states=True)
    last = full.hidden_states[-1]
    if model.token_reader.apply_final_norm:
        last = model.token_reader.final_norm(backbone)(last)
    skipped = model.token_reader.family.num_prefix_tokens(backbone.config)
    assert skipped == {"dinov2_with_registers": 3, "dinov3_vit": 3, "deit": 2}[family]
    assert read.num_prefix_tokens == 1 and read.tokens.shape[1] == 1 + 16
    torch.testing.assert_close(read.tokens[:, 0], last[:, 0])
    torch.testing.assert_close(read.tokens[:, 1:], last[:, skipped:])


def test_final_norm_follows_family_default_and_override(images):
    backbone = tiny_backbone("dinov2")
    post = hep.Dinov2ForEfficientProbing.from_backbone(backbone, num_labels=3, num_queries=4)
    pre = hep.Dinov2ForEfficientProbing.from_backbone(backbone, num_labels=3, num_queries=4, apply_final_norm=False)
    outputs = backbone(pixel_values=images, output_hidden_states=True)
    torch.testing.assert_close(post.token_reader(backbone, images).tokens, outputs.last_hidden_state[:, 1:])
    torch.testing.assert_close(pre.token_reader(backbone, images).tokens, outputs.hidden_states[-1][:, 1:])


def test_intermediate_and_multiple_layers(images):
    backbone = tiny_backbone("vit")
    model = hep.ViTForEfficientProbing.from_backbone(backbone, num_labels=3, num_queries=4, feature_layers=[1, -1])
    hidden = backbone(pixel_values=images, output_hidden_states=True).hidden_states
    tokens = model.token_reader(backbone, images).tokens
    torch.testing.assert_close(tokens, torch.cat([hidden[1], hidden[2]], -1)[:, 1:])
    assert model.probe.pooling.hidden_size == 64


def test_cached_tokens_give_the_same_logits_as_images(images):
    model = hep.ViTForEfficientProbing.from_backbone(tiny_backbone("vit"), num_labels=3, num_queries=4).eval()
    tokens = model.token_reader(model.backbone, images).tokens
    torch.testing.assert_close(model(tokens=tokens).logits, model(pixel_values=images).logits)


def test_siglip_rejects_cls_reading_configs():
    config = tiny_backbone_config("siglip_vision_model")
    with pytest.raises(StrictDataclassClassValidationError, match="backbones have none|has none"):
        hep.LinearProbingConfig(backbone_config=config, features="cls")
    with pytest.raises(StrictDataclassClassValidationError, match="backbones have none|has none"):
        hep.EfficientProbingConfig(backbone_config=config, num_queries=4, token_selection="all")
    hep.LinearProbingConfig(backbone_config=config, features="gap")  # fine


@pytest.mark.parametrize("family", ["vit", "clip_vision_model", "dinov2_with_registers"])
def test_probe_only_round_trip(family, saved_backbone, tmp_path, images):
    model = hep.AutoModelForEfficientProbing.from_backbone(saved_backbone(family), num_labels=3, num_queries=4)
    model.train()
    model(pixel_values=images)  # update BatchNorm statistics, so they must be saved too
    model.eval()
    expected = model(pixel_values=images).logits
    model.save_pretrained(tmp_path / "probe")
    assert sorted(os.listdir(tmp_path / "probe")) == ["config.json", "model.safetensors"]
    with safe_open(tmp_path / "probe" / "model.safetensors", "pt") as f:
        assert sorted(f.keys()) == sorted(model.probe_state_dict())
    loaded = hep.AutoModelForEfficientProbing.from_pretrained(tmp_path / "probe")
    assert type(loaded) is type(model) and not loaded.training
    assert torch.equal(loaded(pixel_values=images).logits, expected)
    via_transformers = AutoModelForImageClassification.from_pretrained(tmp_path / "probe")
    assert torch.equal(via_transformers(pixel_values=images).logits, expected)


def test_full_round_trip(saved_backbone, tmp_path, images):
    model = hep.AutoModelForEfficientProbing.from_backbone(saved_backbone("vit"), probe="linear", num_labels=3).eval()
    expected = model(pixel_values=images).logits
    model.save_pretrained(tmp_path / "full", save_backbone=True)
    loaded = hep.AutoModelForEfficientProbing.from_pretrained(tmp_path / "full")
    assert torch.equal(loaded.eval()(pixel_values=images).logits, expected)
    assert os.path.getsize(tmp_path / "full" / "model.safetensors") > 10 * _probe_file_size(model, tmp_path)


def test_unnamed_backbone_is_saved_with_the_probe(tmp_path, images):
    model = hep.ViTForEfficientProbing(
        hep.EfficientProbingConfig(backbone_config=tiny_backbone_config("vit"), num_queries=4, num_labels=3)
    ).eval()
    model.save_pretrained(tmp_path / "p")
    loaded = hep.AutoModelForEfficientProbing.from_pretrained(tmp_path / "p").eval()
    assert torch.equal(loaded(pixel_values=images).logits, model(pixel_values=images).logits)
    with pytest.raises(ValueError, match="must name its backbone"):
        model.save_pretrained(tmp_path / "q", save_backbone=False)


def _probe_file_size(model, tmp_path):
    model.save_pretrained(tmp_path / "size-probe")
    return os.path.getsize(tmp_path / "size-probe" / "model.safetensors")


def test_probe_file_size_is_proportional_to_probe_parameters(saved_backbone, tmp_path):
    path = saved_backbone("vit")
    sizes = {}
    for queries in (1, 4, 32):
        model = hep.ViTForEfficientProbing.from_backbone(path, num_labels=500, num_queries=queries)
        tensors = sum(v.numel() for v in model.probe_state_dict().values())
        sizes[queries] = (tensors, _probe_file_size(model, tmp_path))
    for tensors, size in sizes.values():
        assert 4 * tensors <= size <= 4 * tensors + 4096  # float32 + a small JSON header


def test_vit_base_ep_probe_file_is_about_5_6_megabytes(tmp_path):
    from safetensors.torch import save_file

    from hf_efficient_probing.probes import EfficientProbing, ProbeHead

    head = ProbeHead(EfficientProbing(768, num_queries=32), num_labels=1000)
    assert hep.count_trainable_parameters(head) == 1_383_400
    save_file({f"probe.{k}": v.contiguous() for k, v in head.state_dict().items()}, tmp_path / "ep.safetensors")
    assert 5.5e6 < os.path.getsize(tmp_path / "ep.safetensors") < 5.6e6


def test_parameter_helper():
    assert hep.probe_parameter_count("ep", 768, 1000, num_queries=32, d_out=1) == 1_383_400
    assert hep.probe_parameter_count("linear", 768, 1000) == 769_000
    assert hep.probe_parameter_count("ep", 768, 1000, num_queries=32, d_out=8) == 195_304


def test_loading_a_probe_onto_another_backbone_fails_clearly(saved_backbone, tmp_path):
    model = hep.ViTForEfficientProbing.from_backbone(saved_backbone("vit"), num_labels=3, num_queries=4)
    model.save_pretrained(tmp_path / "probe")
    wider = tiny_backbone("vit", hidden_size=64)
    with pytest.raises(ValueError, match="hidden_size=32.*hidden_size=64"):
        hep.AutoModelForEfficientProbing.from_pretrained(tmp_path / "probe", backbone=wider)
    other_grid = tiny_backbone("vit", patch_size=4)
    with pytest.raises(ValueError, match="patch_size=8.*patch_size=4"):
        hep.AutoModelForEfficientProbing.from_pretrained(tmp_path / "probe", backbone=other_grid)


def test_auto_registration_without_remote_code(saved_backbone, tmp_path):
    model = hep.AutoModelForEfficientProbing.from_backbone(saved_backbone("vit_mae"), num_labels=3, num_queries=4)
    model.save_pretrained(tmp_path / "probe")
    config = AutoConfig.from_pretrained(tmp_path / "probe")
    assert type(config) is hep.EfficientProbingConfig
    assert config.architectures == ["ViTMAEForEfficientProbing"]
    assert config.backbone_name_or_path == model.config.backbone_name_or_path
    assert "auto_map" not in config.to_dict()


@pytest.mark.parametrize("save_backbone", [False, True])
def test_loading_reports_no_missing_or_unexpected_keys(save_backbone, saved_backbone, tmp_path, transformers_logs):
    model = hep.ViTForEfficientProbing.from_backbone(saved_backbone("vit"), num_labels=3, num_queries=4)
    model.save_pretrained(tmp_path / "probe", save_backbone=save_backbone)
    hep.AutoModelForEfficientProbing.from_pretrained(tmp_path / "probe")
    assert "missing" not in transformers_logs.text.lower() and "unexpected" not in transformers_logs.text.lower()


@pytest.mark.parametrize("model_type", ["mlcd_vision_model"])
def test_families_outside_the_table_use_the_generic_row(model_type, images):
    from conftest import TINY
    from transformers import AutoModel

    assert model_type not in FAMILIES
    backbone = AutoModel.from_config(AutoConfig.for_model(model_type, **TINY)).eval()
    model = hep.AutoModelForEfficientProbing.from_backbone(backbone, num_labels=3, num_queries=4).eval()
    assert type(model) is hep.VisionModelForEfficientProbing
    output = model(pixel_values=images, output_attentions=True)
    assert output.logits.shape == (4, 3) and output.probe_attentions.shape == (4, 4, 16)


def test_larger_images_interpolate_position_embeddings(family):
    model = hep.AutoModelForEfficientProbing.from_backbone(tiny_backbone(family), num_labels=3, num_queries=4).eval()
    if FAMILIES[family].fixed_image_size(model.token_reader.config):  # AIMv2's learned table: refused, clearly
        with pytest.raises(ValueError, match="position embeddings for 32x32 images only"):
            model(pixel_values=torch.randn(2, 3, 48, 40))
        return
    output = model(pixel_values=torch.randn(2, 3, 48, 40), output_attentions=True)
    assert output.probe_attentions.shape == (2, 4, 6 * 5)
    assert torch.isfinite(output.logits).all()


def test_loading_a_probe_onto_another_family_fails_clearly(saved_backbone, tmp_path):
    model = hep.ViTForEfficientProbing.from_backbone(saved_backbone("vit"), num_labels=3, num_queries=4)
    model.save_pretrained(tmp_path / "probe")
    with pytest.raises(ValueError, match="'vit' backbone with model_type='vit'.*'dinov2'"):
        hep.AutoModelForEfficientProbing.from_pretrained(tmp_path / "probe", backbone=tiny_backbone("dinov2"))
