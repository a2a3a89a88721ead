"""The mapped rows of the official loaders that are not pip packages (models_vit, torch.hub DINOv2 and DINOv3, aim.v2)
read the tokens the official code handed the heads.

``fixtures/official_backbone_tokens.safetensors`` holds, per loader code path, small random weights in the upstream
key layout and the tokens the official code computed from them (``fixtures/make_backbone_token_fixtures.py`` wrote
it, from the commits its docstring names). Each test loads the same weights into the row's Hub family, builds the
probe with the row's settings, and compares the tokens the probe reads with the official ones, for ``ep`` and, where
the official code has one, ``ep_all``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import tiny_backbone
from safetensors import safe_open
from transformers import AutoConfig

from hf_efficient_probing import AutoModelForEfficientProbing
from hf_efficient_probing.backbones import build_backbone
from hf_efficient_probing.official.mapping import OFFICIAL_BACKBONES

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "official_backbone_tokens.safetensors"
FIXTURE_LOADERS = {"": "models_vit", "hub": "torch.hub DINOv2", "dinov3": "torch.hub DINOv3", "aimv2": "aim.v2"}
ROWS = [row for row in OFFICIAL_BACKBONES.values() if row.hub_id and row.loader in FIXTURE_LOADERS]


def fixture_case(model: str) -> tuple[str, dict, dict[str, torch.Tensor]]:
    """The recorded case of the official ``model`` (or of the constructor it differs from only in size)."""
    with safe_open(FIXTURE, "pt") as file:
        cases = json.loads(file.metadata()["cases"])
        (case,) = [
            name for name, info in cases.items() if model in (name, *(c.rsplit(".")[-1] for c in info["stands_for"]))
        ]
        tensors = {key[len(case) + 1 :]: file.get_tensor(key) for key in file.keys() if key.startswith(f"{case}/")}
        tensors["images"] = file.get_tensor("images")
    return case, cases[case]["sizes"], tensors  # fmt: skip


def _split_qkv(prefix: str, weight: torch.Tensor, bias: torch.Tensor | None, names=("q_proj", "k_proj", "v_proj")):
    converted = {}
    for index, name in enumerate(names):
        converted[f"{prefix}{name}.weight"] = weight.chunk(3)[index]
        if bias is not None:
            converted[f"{prefix}{name}.bias"] = bias.chunk(3)[index]
    return converted


def _blocks(
    weights: dict, rename: dict[str, str], layer: str, attention: str, qkv_names=("q_proj", "k_proj", "v_proj")
):
    """Block weights ``blocks.<i>.<key>`` under ``<layer>.<i>.``, ``rename`` mapping the rest of each key (longest
    first); the fused ``attn.qkv`` split into three projections under ``attention``."""
    converted = {}
    for key, value in weights.items():
        block = re.match(r"blocks\.(\d+)\.(.*)", key)
        if not block or block[2].startswith("attn.qkv.bias"):
            continue
        prefix, rest = f"{layer}.{block[1]}.", block[2]
        if rest == "attn.qkv.weight":
            converted.update(
                _split_qkv(prefix + attention, value, weights.get(f"blocks.{block[1]}.attn.qkv.bias"), qkv_names)
            )
            continue
        old = next(old for old in sorted(rename, key=len, reverse=True) if rest.startswith(old))
        converted[prefix + rename[old] + rest[len(old) :]] = value
    return converted  # fmt: skip


def models_vit_to_hf(weights: dict, model_type: str) -> dict:
    """models_vit (timm) weights for the row's family: timm keys as they are for ``timm_wrapper``, transformers'
    I-JEPA names for ``ijepa``."""
    if model_type == "timm_wrapper":
        return dict(weights)
    rename = {
        "norm1.": "layernorm_before.",
        "norm2.": "layernorm_after.",
        "attn.proj.": "attention.o_proj.",
        "mlp.": "mlp.",
    }
    converted = _blocks(weights, rename, "layers", "attention.")
    converted["embeddings.position_embeddings"] = weights["pos_embed"]
    converted["embeddings.patch_embeddings.projection.weight"] = weights["patch_embed.proj.weight"]
    converted["embeddings.patch_embeddings.projection.bias"] = weights["patch_embed.proj.bias"]
    converted["layernorm.weight"], converted["layernorm.bias"] = weights["fc_norm.weight"], weights["fc_norm.bias"]
    return converted  # fmt: skip


def dinov2_to_hf(weights: dict) -> dict:
    rename = {"norm1.": "norm1.", "norm2.": "norm2.", "attn.proj.": "attention.o_proj.", "mlp.": "mlp.",
              "ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1"}  # fmt: skip
    converted = _blocks(weights, rename, "encoder.layer", "attention.")
    converted.update({
        "embeddings.cls_token": weights["cls_token"], "embeddings.mask_token": weights["mask_token"],
        "embeddings.position_embeddings": weights["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": weights["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": weights["patch_embed.proj.bias"],
        "layernorm.weight": weights["norm.weight"], "layernorm.bias": weights["norm.bias"],
    })  # fmt: skip
    return converted


def dinov3_to_hf(weights: dict) -> dict:
    """DINOv3's keys under transformers' names; the key bias is masked to zero upstream (``mask_k_bias``) and has no
    parameter in transformers; SwiGLU's w1, w2, w3 are gate, up, down."""
    rename = {"norm1.": "norm1.", "norm2.": "norm2.", "attn.proj.": "attention.o_proj.", "mlp.fc1.": "mlp.up_proj.",
              "mlp.fc2.": "mlp.down_proj.", "mlp.w1.": "mlp.gate_proj.", "mlp.w2.": "mlp.up_proj.",
              "mlp.w3.": "mlp.down_proj.", "ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1"}  # fmt: skip
    converted = _blocks(weights, rename, "model.layer", "attention.")
    for key in [key for key in weights if key.endswith("attn.qkv.bias")]:
        block = key.split(".")[1]
        query, masked_key, value = (weights[key] * weights[f"{key}_mask"]).chunk(3)
        assert not masked_key.any(), "DINOv3 masks its key bias to zero"
        del converted[f"model.layer.{block}.attention.k_proj.bias"]
        converted[f"model.layer.{block}.attention.q_proj.bias"] = query
        converted[f"model.layer.{block}.attention.v_proj.bias"] = value
    converted.update({
        "embeddings.cls_token": weights["cls_token"], "embeddings.mask_token": weights["mask_token"][None],
        "embeddings.register_tokens": weights["storage_tokens"],
        "embeddings.patch_embeddings.weight": weights["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.bias": weights["patch_embed.proj.bias"],
        "norm.weight": weights["norm.weight"], "norm.bias": weights["norm.bias"],
    })  # fmt: skip
    return converted


def aimv2_to_hf(weights: dict) -> dict:
    """aim.v2's keys under transformers' names (its SwiGLU is ``fc2(silu(fc1(x)) * fc3(x))``)."""
    trunk = {key.removeprefix("trunk."): value for key, value in weights.items() if key.startswith("trunk.")}
    rename = {"norm_1.": "rms_norm1.", "norm_2.": "rms_norm2.", "attn.proj.": "attention.out_proj.",
              "mlp.fc1.": "ffn.gate_proj.", "mlp.fc3.": "ffn.up_proj.", "mlp.fc2.": "ffn.down_proj."}  # fmt: skip
    converted = _blocks(trunk, rename, "encoder.layers", "attention.")
    converted.update({
        "embeddings.patch_embed.weight": weights["preprocessor.patchifier.proj.weight"],
        "embeddings.patch_embed.bias": weights["preprocessor.patchifier.proj.bias"],
        "embeddings.rms_norm.weight": weights["preprocessor.patchifier.norm.weight"],
        "embeddings.position_embedding.weight": weights["preprocessor.pos_embed"][0],
        "rms_norm.weight": trunk["post_trunk_norm.weight"],
    })  # fmt: skip
    return converted


def tiny_backbone_of(row, sizes: dict, weights: dict):
    """The row's Hub family at the recorded sizes, holding the recorded weights (every weight used, none missing)."""
    width, depth, heads, patch = (
        sizes["embed_dim"],
        sizes.get("depth", sizes.get("num_blocks")),
        sizes["num_heads"],
        sizes["patch_size"],
    )
    vit = dict(hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads, patch_size=patch)
    if row.model_type == "timm_wrapper":
        model_args = dict(embed_dim=width, depth=depth, num_heads=heads, patch_size=patch, img_size=sizes["img_size"])
        config = AutoConfig.for_model(
            "timm_wrapper", architecture=row.hub_id.split("/")[1].split(".")[0], model_args=model_args
        )
        converted, target = models_vit_to_hf(weights, row.model_type), "timm_model."
    elif row.model_type == "ijepa":
        config = AutoConfig.for_model(
            "ijepa", **vit, intermediate_size=4 * width, image_size=sizes["img_size"], layer_norm_eps=1e-6
        )
        converted, target = models_vit_to_hf(weights, row.model_type), ""
    elif row.model_type == "dinov2":
        config = AutoConfig.for_model("dinov2", **vit, image_size=sizes["img_size"], layer_norm_eps=1e-6)
        converted, target = dinov2_to_hf(weights), ""
    elif row.model_type == "dinov3_vit":
        gated = "blocks.0.mlp.w1.weight" in weights
        hidden = weights["blocks.0.mlp.w1.weight" if gated else "blocks.0.mlp.fc1.weight"].shape[0]
        config = AutoConfig.for_model(
            "dinov3_vit",
            **vit,
            intermediate_size=hidden,
            image_size=sizes["img_size"],
            num_register_tokens=4,
            rope_theta=100.0,
            use_gated_mlp=gated,
            hidden_act="silu" if gated else "gelu",
            query_bias="blocks.0.attn.qkv.bias" in weights,
            value_bias="blocks.0.attn.qkv.bias" in weights,
        )
        converted, target = dinov3_to_hf(weights), ""
    else:
        config = AutoConfig.for_model(
            "aimv2_vision_model",
            **vit,
            intermediate_size=sizes["mlp_hidden_dim"],
            image_size=sizes["img_size"],
            use_head=False,
        )
        converted, target = aimv2_to_hf(weights), ""
    backbone = build_backbone(config).eval()
    module = backbone.timm_model if target else backbone
    missing, unexpected = module.load_state_dict(converted, strict=False)
    assert not unexpected and all(key.startswith("head.") for key in missing), (missing, unexpected)
    return backbone  # fmt: skip


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.model)
def test_row_reads_the_tokens_of_the_official_loader(row):
    """The row's family, with the row's settings (final norm, layers, [CLS] or not, DINOv2's torch.hub position
    interpolation), reads from the recorded weights the tokens the official code computed from them."""
    case, sizes, recorded = fixture_case(row.model)
    backbone = tiny_backbone_of(row, sizes, {k: v for k, v in recorded.items() if k not in ("images", "ep", "ep_all")})
    for official in ("ep", "ep_all"):
        if official not in recorded:  # no [CLS] (I-JEPA built --no_cls_token, AIMv2): the official code refuses ep_all
            continue
        model = AutoModelForEfficientProbing.from_backbone(
            backbone, probe="ep", num_queries=4, num_labels=2, token_selection=row.token_selection(official),
            apply_final_norm=row.apply_final_norm, feature_layers=list(row.feature_layers),
            interpolate_offset=row.interpolate_offset,
        )  # fmt: skip
        with torch.no_grad():
            tokens = model.token_reader(backbone, recorded["images"]).tokens
        torch.testing.assert_close(tokens, recorded[official], rtol=1e-4, atol=1e-4, msg=f"{row.name}, {official}")


def test_dinov2_rows_need_the_torch_hub_interpolation(tmp_path):
    """transformers' own DINOv2 interpolation (``size=grid``) misses the official tokens: the offset is what makes the
    rows exact, and a saved probe keeps it."""
    row = OFFICIAL_BACKBONES[("dinov2_vitb14", "hub", "")]
    _, sizes, recorded = fixture_case(row.model)
    backbone = tiny_backbone_of(row, sizes, {k: v for k, v in recorded.items() if k not in ("images", "ep", "ep_all")})
    plain = AutoModelForEfficientProbing.from_backbone(backbone, probe="ep", num_queries=4, num_labels=2)
    with torch.no_grad():
        difference = (plain.token_reader(backbone, recorded["images"]).tokens - recorded["ep"]).abs().max()
    assert difference > 0.05, "without the offset the 37x37 table lands elsewhere on the 16x16 grid"

    backbone.save_pretrained(tmp_path / "backbone")
    model = AutoModelForEfficientProbing.from_backbone(
        str(tmp_path / "backbone"), probe="ep", num_queries=4, num_labels=2, interpolate_offset=0.1
    )
    model.save_pretrained(tmp_path / "probe")  # probe only, naming the backbone's folder
    reloaded = AutoModelForEfficientProbing.from_pretrained(tmp_path / "probe")
    with torch.no_grad():
        tokens = reloaded.read_tokens(recorded["images"]).tokens
    torch.testing.assert_close(tokens, recorded["ep"], rtol=1e-4, atol=1e-4)


def test_the_torch_hub_interpolation_is_refused_where_it_does_not_apply():
    with pytest.raises(ValueError, match="torch.hub DINOv2's position interpolation"):
        AutoModelForEfficientProbing.from_backbone(
            build_backbone(AutoConfig.for_model("vit", hidden_size=16, num_hidden_layers=1, num_attention_heads=2)),
            probe="ep", num_queries=4, num_labels=2, interpolate_offset=0.1,
        )  # fmt: skip
    with pytest.raises(Exception, match="interpolate_offset must be a positive number"):  # the config's validator
        AutoConfig.for_model("efficient_probing", backbone_config={"model_type": "dinov2"}, interpolate_offset=-1.0)


def test_aimv2_probes_read_every_patch_after_the_final_rms_norm_by_default(images):
    """The family's defaults are the official AIMv2Wrapper's tokens: every patch token (no [CLS]) after the final
    RMSNorm, which is the model's own ``last_hidden_state``."""
    backbone = tiny_backbone("aimv2_vision_model")
    model = AutoModelForEfficientProbing.from_backbone(backbone, probe="ep", num_queries=4, num_labels=2)
    with torch.no_grad():
        read = model.read_tokens(images)
        torch.testing.assert_close(read.tokens, backbone(pixel_values=images).last_hidden_state)
    assert (read.num_prefix_tokens, read.grid_size) == (0, (4, 4))
    with pytest.raises(Exception, match=r"reads the \[CLS\] token, but 'aimv2_vision_model' backbones have none"):
        AutoModelForEfficientProbing.from_backbone(backbone, probe="ep", num_labels=2, token_selection="all")
