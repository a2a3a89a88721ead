"""The baseline probes against the published formulas, the official parameter counts and official checkpoints.

Each reference below is written from the math (official-code notes, section 1.2) in plain, unfolded PyTorch and reads
the *official* state-dict layout (official key names and shapes), so the same references check the poolings and
the conversion of official heads: a pooling's weights are exported to that layout with ``OFFICIAL_KEYS`` (a table
written here, independently of the converter's), then either run through the reference or loaded back with
``load_official_head``.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_backbone

from hf_efficient_probing import (
    AttentiveProbingConfig,
    AutoModelForEfficientProbing,
    ViTForAttentiveProbing,
)
from hf_efficient_probing.official import conversion
from hf_efficient_probing.official.conversion import load_official_head
from hf_efficient_probing.probes import BASELINE_POOLINGS, ProbeHead, build_pooling
from hf_efficient_probing.probes.counting import probe_parameter_count

D = 48  # divisible by every official head count (4, 8, 12, 16)


# ---------------------------------------------------------------------------------------------------------------
# References: official layout in, pooled feature out


def heads(x, n):  # [B, T, D] -> [B, n, T, D/n]
    return x.view(x.shape[0], x.shape[1], n, -1).transpose(1, 2)


def attend(q, k, v, n):
    """Multi-head attention with separate projected q, k, v ``[B, T, D]``; returns ``[B, Tq, D]``."""
    qh, kh, vh = heads(q, n), heads(k, n), heads(v, n)
    a = (qh @ kh.transpose(-1, -2) / math.sqrt(qh.shape[-1])).softmax(-1)
    return (a @ vh).transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)


def ln(x, s, prefix, eps):
    return F.layer_norm(x, x.shape[-1:], s[prefix + ".weight"], s[prefix + ".bias"], eps)


def lin(x, s, prefix):
    return F.linear(x, s[prefix + ".weight"], s.get(prefix + ".bias"))


def mlp(x, s, prefix):
    return lin(F.gelu(lin(x, s, prefix + ".fc1")), s, prefix + ".fc2")


def bn_eval(x, s, prefix, eps):  # running statistics over the last axis
    return (x - s[prefix + ".running_mean"]) / torch.sqrt(s[prefix + ".running_var"] + eps) * s.get(
        prefix + ".weight", 1.0
    ) + s.get(prefix + ".bias", 0.0)


def ref_abmilp(s, x, **_):
    q, k, v = lin(x, s, "self_attn.qkv").chunk(3, -1)
    z = lin(attend(q, k, v, 1), s, "self_attn.proj")
    a = lin(torch.tanh(lin(z, s, "attention_predictor.0")), s, "attention_predictor.2").softmax(1)
    return (a * z).sum(1)


def ref_simpool(s, x, **_):
    kv = ln(x, s, "norm_patches", 1e-6)
    q = lin(x.mean(1, keepdim=True), s, "wq")
    return attend(q, lin(kv, s, "wk"), kv, 1)[:, 0]


def ref_esimpool(s, x, **_):
    return attend(ln(x.mean(1, keepdim=True), s, "norm_patches", 1e-6), ln(x, s, "norm_patches", 1e-6), x, 12)[:, 0]


def ref_clip(s, x, grid, **_):
    xn = ln(x, s, "norm", 1e-6)
    pos = s["pos_embed"]
    if grid != (14, 14):  # the library's documented extension: bicubic resize of the 14 x 14 embedding
        spatial = F.interpolate(pos[1:].T.reshape(1, -1, 14, 14), size=grid, mode="bicubic", align_corners=False)
        pos = torch.cat([pos[:1], spatial.flatten(2)[0].T])
    seq = torch.cat([xn.mean(1, keepdim=True), xn], 1) + pos
    q, k, v = lin(seq, s, "qkv").chunk(3, -1)
    return lin(attend(q, k, v, 4), s, "proj")[:, 0]  # all N + 1 outputs, keep the first


def ref_siglip(s, x, **_):
    q = lin(s["latent"].expand(x.shape[0], -1, -1), s, "q")
    k, v = lin(x, s, "kv").chunk(2, -1)
    z = lin(attend(q, k, v, 8), s, "proj")
    return (z + mlp(z, s, "mlp"))[:, 0]


def ref_aim(s, x, training=False, **_):
    if training:
        xn = (x - x.mean((0, 1))) / torch.sqrt(x.var((0, 1), unbiased=False) + 1e-6)
    else:
        xn = bn_eval(x, s, "bn", 1e-6)
    q = s["cls_token"].expand(x.shape[0], -1, -1)  # not projected
    return attend(q, lin(xn, s, "k"), lin(xn, s, "v"), 16)[:, 0]


def ref_coca(s, x, **_):
    queries = F.layer_norm(s["img_queries"], (D,), s["norm.gamma"], s["norm.beta"])  # all 196, keep the first
    q = heads(lin(queries, s, "to_q").expand(x.shape[0], -1, -1), 8)  # B, 8, 196, 64
    k, v = lin(x, s, "to_kv").chunk(2, -1)  # one key/value head shared by the 8 query heads
    a = (q @ k.unsqueeze(1).transpose(-1, -2) / 8).softmax(-1)
    out = (a @ v.unsqueeze(1)).transpose(1, 2).reshape(x.shape[0], -1, 512)
    return lin(out, s, "to_out")[:, 0]


def ref_cait(s, x, **_):
    p = "blocks_token_only.0."
    c = s["cls_token"].expand(x.shape[0], -1, -1)
    u = ln(torch.cat([c, x], 1), s, p + "norm1", 1e-6)
    c = c + s[p + "gamma_1"] * lin(
        attend(lin(u[:, :1], s, p + "attn.q"), lin(u, s, p + "attn.k"), lin(u, s, p + "attn.v"), 4), s, p + "attn.proj"
    )
    c = c + s[p + "gamma_2"] * mlp(ln(c, s, p + "norm2", 1e-6), s, p + "mlp")
    return ln(torch.cat([c, x], 1), s, "norm", 1e-5)[:, 0]


def ref_dinovit(s, x, **_):
    p = "dino_block."
    q, k, v = lin(ln(x, s, p + "norm1", 1e-5), s, p + "attn.qkv").chunk(3, -1)
    x = x + lin(attend(q, k, v, 8), s, p + "attn.proj")
    x = x + mlp(ln(x, s, p + "norm2", 1e-5), s, p + "mlp")
    return x.mean(1)


def ref_jepa(s, x, **_):
    p = "cross_attention_block."
    q0 = s["query_tokens"].expand(x.shape[0], -1, -1)
    k, v = lin(ln(x, s, p + "norm1", 1e-5), s, p + "xattn.kv").chunk(2, -1)
    q = q0 + lin(attend(lin(q0, s, p + "xattn.q"), k, v, 16), s, p + "xattn.proj")
    return (q + mlp(ln(q, s, p + "norm2", 1e-5), s, p + "mlp"))[:, 0]


def ref_dolg(s, x, training=False, **_):
    f = F.conv2d(x.transpose(1, 2).unsqueeze(-1), s["conv1.weight"], s["conv1.bias"]).squeeze(-1).transpose(1, 2)
    if training:
        f = (f - f.mean((0, 1))) / torch.sqrt(f.var((0, 1), unbiased=False) + 1e-5) * s["bn.weight"] + s["bn.bias"]
    else:
        f = bn_eval(f, s, "bn", 1e-5)
    score = F.softplus(F.linear(f.relu(), s["conv2.weight"].flatten(1), s["conv2.bias"]))
    return (score * f / f.norm(dim=-1, keepdim=True)).mean(1)


def ref_cae(s, x, **_):
    q = lin(ln(s["query_token"].expand(x.shape[0], -1, -1), s, "norm1_q", 1e-5), s, "cross_attn.q")
    k = lin(ln(x, s, "norm1_k", 1e-5), s, "cross_attn.k")
    v = lin(ln(x, s, "norm1_v", 1e-5), s, "cross_attn.v")
    return lin(attend(q, k, v, 8), s, "cross_attn.proj")[:, 0]


def ref_cbam(s, x, grid, **_):
    b = x.shape[0]
    m = x.transpose(1, 2).reshape(b, D, *grid)  # token n sits at (n // w, n % w)

    def fc(t):
        return F.conv2d(F.conv2d(t, s["channel.fc1.weight"]).relu(), s["channel.fc2.weight"])

    y = m * torch.sigmoid(fc(m.mean((2, 3), keepdim=True)) + fc(m.amax((2, 3), keepdim=True)))
    g = F.conv2d(
        torch.cat([y.mean(1, keepdim=True), y.amax(1, keepdim=True)], 1), s["spatial.conv.conv.weight"], padding=3
    )
    g = bn_eval(g.transpose(1, 3), s, "spatial.conv.bn", 1e-5).transpose(1, 3)
    return F.relu(y * torch.sigmoid(g) + m).mean((2, 3))


def ref_mhca(s, x, **_):  # not an official pooling: the library's own layout
    q = lin(s["query"].expand(x.shape[0], 1, -1), s, "q_proj")
    return lin(attend(q, lin(x, s, "k_proj"), lin(x, s, "v_proj"), 16), s, "out_proj")[:, 0]


REFERENCES = {name: globals()[f"ref_{name}"] for name in BASELINE_POOLINGS}
GRID_POOLINGS = {"clip", "cbam", "dolg"}

# library key -> official key (a trailing "." renames a whole prefix); official 1x1 convolutions are 4-D.
OFFICIAL_KEYS = {
    "abmilp": {"self_attention.": "self_attn.", "scorer.": "attention_predictor."},
    "simpool": {"norm.": "norm_patches.", "q_proj.": "wq.", "k_proj.": "wk."},
    "esimpool": {"norm.": "norm_patches."},
    "clip": {"position_embedding": "pos_embed", "out_proj.": "proj."},
    "siglip": {"q_proj.": "q.", "kv_proj.": "kv.", "out_proj.": "proj."},
    "aim": {"query": "cls_token", "k_proj.": "k.", "v_proj.": "v.", "token_norm.": "bn."},
    "coca": {
        "queries": "img_queries",
        "query_norm_weight": "norm.gamma",
        "query_norm_bias": "norm.beta",
        "q_proj.": "to_q.",
        "kv_proj.": "to_kv.",
        "out_proj.": "to_out.",
    },
    "cait": {
        "attn_scale": "blocks_token_only.0.gamma_1",
        "mlp_scale": "blocks_token_only.0.gamma_2",
        "attn_norm.": "blocks_token_only.0.norm1.",
        "q_proj.": "blocks_token_only.0.attn.q.",
        "k_proj.": "blocks_token_only.0.attn.k.",
        "v_proj.": "blocks_token_only.0.attn.v.",
        "out_proj.": "blocks_token_only.0.attn.proj.",
        "mlp_norm.": "blocks_token_only.0.norm2.",
        "mlp.": "blocks_token_only.0.mlp.",
        "final_norm.": "norm.",
    },
    "dinovit": {
        "attn_norm.": "dino_block.norm1.",
        "qkv.": "dino_block.attn.qkv.",
        "out_proj.": "dino_block.attn.proj.",
        "mlp_norm.": "dino_block.norm2.",
        "mlp.": "dino_block.mlp.",
    },
    "jepa": {
        "query": "query_tokens",
        "token_norm.": "cross_attention_block.norm1.",
        "q_proj.": "cross_attention_block.xattn.q.",
        "kv_proj.": "cross_attention_block.xattn.kv.",
        "out_proj.": "cross_attention_block.xattn.proj.",
        "mlp_norm.": "cross_attention_block.norm2.",
        "mlp.": "cross_attention_block.mlp.",
    },
    "dolg": {"norm.": "bn."},
    "cae": {
        "query": "query_token",
        "query_norm.": "norm1_q.",
        "key_norm.": "norm1_k.",
        "value_norm.": "norm1_v.",
        "unused_norm.": "norm2_cross.",
        "q_proj.": "cross_attn.q.",
        "k_proj.": "cross_attn.k.",
        "v_proj.": "cross_attn.v.",
        "out_proj.": "cross_attn.proj.",
    },
    "cbam": {
        "channel_fc1.": "channel.fc1.",
        "channel_fc2.": "channel.fc2.",
        "spatial_conv.": "spatial.conv.conv.",
        "spatial_norm.": "spatial.conv.bn.",
    },
    "mhca": {},
}
CONV_1X1 = {"dolg": ("conv1.weight", "conv2.weight"), "cbam": ("channel.fc1.weight", "channel.fc2.weight")}


def official_state(name: str, pooling) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in pooling.state_dict().items():
        official = OFFICIAL_KEYS[name].get(key)
        for prefix, target in OFFICIAL_KEYS[name].items():
            if official is None and prefix.endswith(".") and key.startswith(prefix):
                official = target + key[len(prefix) :]
        official = official or key
        out[official] = value[..., None, None] if official in CONV_1X1.get(name, ()) else value
    return out


def randomised(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Move every float tensor off its initial value (zero queries, unit gains, fresh BatchNorm statistics)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for key, tensor in module.state_dict().items():
            if tensor.is_floating_point() and key != "query_norm_bias":  # CoCa's LayerNorm bias is a fixed zero
                tensor.add_(torch.randn_like(tensor) * 0.2)
                if "running_var" in key:
                    tensor.abs_().add_(0.5)
    return module


def tokens_and_grid(num_prefix: int, grid: tuple[int, int], batch: int = 3, seed: int = 1):
    torch.manual_seed(seed)
    return torch.randn(batch, num_prefix + grid[0] * grid[1], D), grid


# ---------------------------------------------------------------------------------------------------------------
# Fidelity


@pytest.mark.parametrize("name", BASELINE_POOLINGS)
@pytest.mark.parametrize("grid", [(3, 5), (14, 14)], ids=["N15-3x5", "N196-14x14"])
def test_pooling_matches_published_formula(name, grid):
    pooling = randomised(build_pooling(name, D)).eval()
    tokens, grid = tokens_and_grid(0, grid)
    with torch.no_grad():
        out = pooling(tokens, grid_size=grid)
        expected = REFERENCES[name](official_state(name, pooling), tokens, grid=grid)
    torch.testing.assert_close(out.pooled, expected, rtol=1e-4, atol=1e-5)
    assert out.attentions.shape[::2] == (3, tokens.shape[1])


@pytest.mark.parametrize("name", ["aim", "dolg"])
def test_batch_statistics_in_training(name):
    """aim and dolg normalise with BatchNorm statistics over all batch x token positions while training."""
    pooling = randomised(build_pooling(name, D)).train()
    tokens, grid = tokens_and_grid(0, (4, 4))
    with torch.no_grad():
        expected = REFERENCES[name](official_state(name, pooling), tokens, grid=grid, training=True)
        torch.testing.assert_close(pooling(tokens, grid_size=grid).pooled, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(GRID_POOLINGS))
def test_grid_poolings_skip_prefix_tokens(name):
    """With a [CLS] and registers in front, the 2-D poolings read only the patch grid (the official ones fail)."""
    pooling = randomised(build_pooling(name, D)).eval()
    tokens, grid = tokens_and_grid(3, (4, 6))
    with torch.no_grad():
        out = pooling(tokens, num_prefix_tokens=3, grid_size=grid)
        torch.testing.assert_close(out.pooled, pooling(tokens[:, 3:], grid_size=grid).pooled)
    assert out.attentions.shape[-1] == tokens.shape[1] and (out.attentions[..., :3] == 0).all()


def test_grid_poolings_need_a_grid_that_fits():
    with pytest.raises(ValueError, match="grid_size"):
        build_pooling("cbam", D)(torch.randn(1, 15, D))
    with pytest.raises(ValueError, match="does not match"):
        build_pooling("clip", D)(torch.randn(1, 16, D), grid_size=(3, 4))


@pytest.mark.parametrize("name", BASELINE_POOLINGS)
def test_batch_of_one_matches_batch(name):
    pooling = randomised(build_pooling(name, D)).eval()
    tokens, grid = tokens_and_grid(0, (2, 3))
    with torch.no_grad():
        single = torch.cat([pooling(tokens[i : i + 1], grid_size=grid).pooled for i in range(3)])
        # float32 rounding only: a batch of 3 and a batch of 1 take other matrix-product kernels (AVX-512 machines
        # block them differently, up to 4e-5 relative); an image leaking into another one's output is far above it
        torch.testing.assert_close(single, pooling(tokens, grid_size=grid).pooled, rtol=1e-4, atol=1e-5)


def test_abmilp_options():
    """The paper's one-layer ABMILP (D + 1 parameters, scores on the raw tokens) and 'map' (scored after
    self-attention, raw tokens pooled)."""
    tokens = torch.randn(2, 10, D)
    single = randomised(build_pooling("abmilp", D, self_attention="none", depth=1))
    assert sum(p.numel() for p in single.parameters()) == D + 1
    weights = F.linear(tokens, single.scorer[0].weight, single.scorer[0].bias).softmax(1)
    torch.testing.assert_close(single(tokens).pooled, (weights * tokens).sum(1))
    mapped = randomised(build_pooling("abmilp", D, self_attention="map")).eval()
    s = official_state("abmilp", mapped)
    q, k, v = lin(tokens, s, "self_attn.qkv").chunk(3, -1)
    z = lin(attend(q, k, v, 1), s, "self_attn.proj")
    weights = lin(torch.tanh(lin(z, s, "attention_predictor.0")), s, "attention_predictor.2").softmax(1)
    torch.testing.assert_close(mapped(tokens).pooled, (weights * tokens).sum(1), rtol=1e-4, atol=1e-5)


def test_clip_position_embedding_native_grid_is_exact():
    pooling = build_pooling("clip", D)
    assert pooling.position_embedding_for((14, 14)) is pooling.position_embedding
    assert pooling.position_embedding_for((3, 5)).shape == (16, D)


# ---------------------------------------------------------------------------------------------------------------
# Parameter counts (the ViT-B targets: D=768, 1000 classes, classifier included)

PAPER_COUNTS = {
    "esimpool": 770_536,
    "cbam": 842_828,
    "simpool": 1_950_184,
    "abmilp": 3_720_425,
    "dolg": 1_361_897,
    "coca": 1_805_032,
    "aim": 1_949_416,
    "cae": 3_135_976,
    "clip": 3_284_200,
    "siglip": 7_854_568,
    "dinovit": 7_854_568,
    "jepa": 7_857_640,
    "cait": 7_860_712,
}


@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
def test_parameter_counts_match_the_paper(name):
    assert probe_parameter_count(name, 768, 1000) == PAPER_COUNTS[name]


def test_counting_command_prints_every_target():
    result = subprocess.run([sys.executable, "-m", "hf_efficient_probing.probes"], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONWARNINGS": "default"})  # fmt: skip
    assert result.returncode == 0 and "Warning" not in result.stderr
    for count in [769_000, 1_383_400, 704_488, 365_032, 195_304, *PAPER_COUNTS.values()]:
        assert f"{count:,}" in result.stdout


# ---------------------------------------------------------------------------------------------------------------
# Conversion of official heads


def official_head_state(name: str, seed: int = 0, num_labels: int = 5, hidden: int = D):
    """An official ``Sequential(pooling, BatchNorm1d, classifier)`` state dict with random weights and statistics."""
    pooling = randomised(build_pooling(name, hidden), seed)
    state = {f"0.{k}": v for k, v in official_state(name, pooling).items()}
    torch.manual_seed(seed + 1)
    state.update(
        {
            "1.running_mean": torch.randn(hidden),
            "1.running_var": torch.rand(hidden) + 0.5,
            "1.num_batches_tracked": torch.tensor(7),
            "2.weight": torch.randn(num_labels, hidden),
            "2.bias": torch.randn(num_labels),
        }
    )
    return state


@pytest.mark.parametrize("name", [n for n in BASELINE_POOLINGS if n != "mhca"])
def test_load_official_head(name):
    state = official_head_state(name)
    tokens, grid = tokens_and_grid(0, (14, 14), batch=2)
    head = load_official_head(
        {"head." + k: v for k, v in state.items()},
        pooling=name,
        hidden_size=D,
        num_labels=5,
        num_heads=16,
        ep_queries=32,
        d_out=1,
        abmilp_sa="both",
        abmilp_depth=2,
    )
    assert isinstance(head, ProbeHead) and not head.training
    pooling_state = {k[2:]: v for k, v in state.items() if k.startswith("0.")}
    with torch.no_grad():
        pooled = REFERENCES[name](pooling_state, tokens, grid=grid)
        normed = (pooled - state["1.running_mean"]) / torch.sqrt(state["1.running_var"] + 1e-6)
        expected = F.linear(normed, state["2.weight"], state["2.bias"])
        torch.testing.assert_close(head(tokens).logits, expected, rtol=1e-4, atol=1e-4)


def test_load_official_head_maps_official_arguments():
    state = official_head_state("jepa")  # built with 16 heads: loading it as 8 heads gives other logits
    tokens, _ = tokens_and_grid(0, (2, 2))
    sixteen = load_official_head(state, pooling="jepa", num_heads=16)
    eight = load_official_head(state, pooling="jepa", num_heads=8)
    assert sixteen.pooling.num_heads == 16 and eight.pooling.num_heads == 8
    assert not torch.allclose(sixteen(tokens).logits, eight(tokens).logits)
    abmilp = load_official_head(official_head_state("abmilp"), pooling="abmilp", abmilp_sa="map", abmilp_act="relu")
    assert abmilp.pooling.self_attention_mode == "map" and isinstance(abmilp.pooling.scorer[1], torch.nn.ReLU)
    with pytest.raises(ValueError, match="does not match"):  # depth 1 has no hidden scorer layer
        load_official_head(official_head_state("abmilp"), pooling="abmilp", abmilp_depth=1)


def test_conversion_command_writes_a_baseline_probe_directory(tmp_path, saved_backbone):
    backbone = saved_backbone("vit", hidden_size=D)
    state = official_head_state("aim")
    torch.save({"state_dict": state, "meta": {"cls_features": "aim", "num_heads": 16}}, tmp_path / "aim_head.pth")
    conversion.main([str(tmp_path / "aim_head.pth"), "--backbone", backbone, "--output", str(tmp_path / "probe")])
    model = AutoModelForEfficientProbing.from_pretrained(tmp_path / "probe")
    assert isinstance(model, ViTForAttentiveProbing) and model.config.pooler_type == "aim"
    tokens = torch.randn(2, 16, D)
    expected = load_official_head(state, pooling="aim")(tokens).logits
    torch.testing.assert_close(model(tokens=tokens).logits, expected)


# ---------------------------------------------------------------------------------------------------------------
# transformers heads over every backbone family


def test_every_baseline_on_every_family(family):
    backbone = tiny_backbone(family, hidden_size=D)
    pixel_values, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    for name in BASELINE_POOLINGS:
        model = AutoModelForEfficientProbing.from_backbone(backbone, probe=name, num_labels=3)
        assert type(model).__name__.endswith("ForAttentiveProbing") and model.config.pooler_type == name
        out = model(pixel_values=pixel_values, labels=labels, output_attentions=True)
        out.loss.backward()
        assert out.logits.shape == (2, 3) and torch.isfinite(out.loss), name
        assert out.probe_attentions.shape[::2] == (2, 16), name
        assert all(p.grad is None for p in model.backbone.parameters()), name


@pytest.mark.parametrize("name", ["siglip", "coca", "mhca"])
def test_probe_only_checkpoint_keeps_probe_keys(tmp_path, saved_backbone, name):
    """transformers rewrites some key names on save for BEiT-like families (k_proj -> attention.key); probe keys
    must survive a save / load round trip untouched."""
    model = AutoModelForEfficientProbing.from_backbone(saved_backbone("beit", hidden_size=D), probe=name, num_labels=3)
    randomised(model.probe)
    model.save_pretrained(tmp_path / "probe")
    loaded = AutoModelForEfficientProbing.from_pretrained(tmp_path / "probe")
    tokens = torch.randn(2, 16, D)
    torch.testing.assert_close(loaded(tokens=tokens).logits, model.eval()(tokens=tokens).logits)


def test_attentive_config_validates_pooler():
    backbone_config = tiny_backbone("vit", hidden_size=D).config
    with pytest.raises(Exception, match="pooler_type"):
        AttentiveProbingConfig(backbone_config=backbone_config, pooler_type="ep")
    with pytest.raises(Exception, match="heads"):
        AttentiveProbingConfig(backbone_config=backbone_config, pooler_type="aim", pooler_kwargs={"heads": 4})
    with pytest.raises(Exception, match="divisible"):
        AttentiveProbingConfig(backbone_config=backbone_config, pooler_type="aim", pooler_kwargs={"num_heads": 5})
    config = AttentiveProbingConfig(backbone_config=backbone_config, pooler_type="jepa", pooler_kwargs={"num_heads": 4})
    assert AttentiveProbingConfig.from_dict(config.to_dict()).pooling_kwargs() == {"num_heads": 4}
