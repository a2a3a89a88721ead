"""8-bit token storage: each format's round-trip error bound, its scales on disk, its own cache key, the plan's
figures equal to the shards' sizes."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import cached_split, tiny_backbone
from safetensors import safe_open
from test_cache import Images, make_key, run, single_thread  # noqa: F401

import hf_efficient_probing as hep
from hf_efficient_probing.backbones import TokenReader
from hf_efficient_probing.cache import ExtractionOptions, cache_tokens_for_model
from hf_efficient_probing.cache.plan import bytes_per_image
from hf_efficient_probing.cache.quantization import TOKEN_DTYPES, decode, encode

EIGHT_BITS = ("float8", "int8")


def tokens_with_outliers() -> torch.Tensor:
    """``[4, 17, 64]`` tokens of unit scale with one channel 50x larger, one tiny token and one all-zero token."""
    tokens = torch.randn(4, 17, 64, generator=torch.Generator().manual_seed(0))
    tokens[..., 5] *= 50
    tokens[0, 1] *= 1e-3
    tokens[0, 2] = 0
    return tokens


def test_float8_keeps_each_value_within_its_relative_bound():
    """e4m3 has 3 mantissa bits: relative error <= 2^-4 for values in its normal range, absolute error <= 2^-10
    scale below it; so a token's relative (L2) error stays under 2^-4."""
    tokens = tokens_with_outliers()
    stored = encode(tokens, "float8")
    assert stored["tokens"].dtype == torch.float8_e4m3fn and stored["scale"].shape == (4, 17)
    decoded = decode(stored, "float8")
    scale = stored["scale"].float()[..., None]
    bound = 2**-4 * tokens.abs() + 2**-10 * scale
    assert ((decoded - tokens).abs() <= bound * (1 + 1e-6)).all()
    relative = (decoded - tokens).norm(dim=-1) / tokens.norm(dim=-1).clamp_min(1e-30)
    assert relative.max() <= 2**-4 and decoded[0, 2].abs().max() == 0


def test_int8_keeps_each_value_within_half_a_step_of_its_token_range():
    tokens = tokens_with_outliers()
    stored = encode(tokens, "int8")
    assert stored["tokens"].dtype == torch.uint8 and set(stored) == {"tokens", "scale", "zero"}
    decoded = decode(stored, "int8")
    step = stored["scale"].float()[..., None]
    assert ((decoded - tokens).abs() <= step / 2 * (1 + 1e-3)).all()
    token_range = tokens.amax(-1) - tokens.amin(-1)
    assert (stored["scale"].float() <= token_range / 255 * 1.01 + 1e-4).all(), "the step fits the range"
    unit = torch.randn(4, 17, 64, generator=torch.Generator().manual_seed(1))  # no outliers: int8's uniform grid
    relative = (decode(encode(unit, "int8"), "int8") - unit).norm(dim=-1) / unit.norm(dim=-1)
    assert relative.max() < 0.015


@pytest.mark.parametrize("token_dtype", EIGHT_BITS)
def test_an_8bit_cache_stores_its_scales_and_serves_dequantised_tokens(tmp_path, token_dtype):
    """Patches in 8 bits with their per-token parameters; the [CLS] token (what a linear probe reads) in float16
    beside them, served exactly as a float16 cache serves it."""
    backbone = tiny_backbone("vit")
    reader = TokenReader(backbone.config, [1, 2], token_selection="all")
    cache = run(backbone, reader, make_key(backbone, reader, dtype=token_dtype), tmp_path, shard_size=4)
    parameters = {"float8": {"scale"}, "int8": {"scale", "zero"}}[token_dtype]
    with safe_open(str(cache.directory / cache.shards[0].file), framework="pt") as shard:
        names = set(shard.keys())
        stored = {name: shard.get_tensor(f"{name}.2") for name in ("tokens", "prefix", *parameters)}
    parts = ("tokens", "prefix", *parameters)
    assert names == {f"{name}.{layer}" for name in parts for layer in (1, 2)} | {"labels"}
    assert all(stored[name].dtype == torch.float16 and stored[name].shape == (4, 16) for name in parameters)
    assert stored["prefix"].dtype == torch.float16 and stored["prefix"].shape == (4, 1, 32)
    rows = cache.dataset(feature_layers=[2])
    served = torch.stack([rows[i]["tokens"] for i in range(4)])
    assert served.dtype == torch.float32 and served.shape == (4, 17, 32)
    torch.testing.assert_close(served, decode(stored, token_dtype), rtol=0, atol=0)
    live = reader.reading([2])(backbone, Images().images[:4]).tokens
    torch.testing.assert_close(served[:, 0], live[:, 0].half().float(), rtol=0, atol=0)
    relative = (served - live).norm(dim=-1) / live.norm(dim=-1)
    assert relative.max() < 2**-4
    patches = torch.stack([cache.dataset(feature_layers=[2], token_selection="patch")[i]["tokens"] for i in range(4)])
    torch.testing.assert_close(patches, served[:, 1:], rtol=0, atol=0)


def test_the_storage_type_names_another_cache():
    backbone = tiny_backbone("vit")
    reader = TokenReader(backbone.config, [-1])
    fingerprints = {make_key(backbone, reader, dtype=name).fingerprint for name in TOKEN_DTYPES}
    assert len(fingerprints) == len(TOKEN_DTYPES)
    with pytest.raises(ValueError, match="float8, int8 tokens, got 'int4'"):
        make_key(backbone, reader, dtype="int4")


@pytest.mark.parametrize("token_dtype", list(TOKEN_DTYPES))
def test_the_plans_bytes_per_image_are_the_shards_bytes(tmp_path, token_dtype):
    """``hf-probe plan``'s figure per image, times the rows, is what the shards hold (their headers aside)."""
    backbone = tiny_backbone("vit")
    reader = TokenReader(backbone.config, [1, 2], token_selection="all")
    cache = run(backbone, reader, make_key(backbone, reader, dtype=token_dtype), tmp_path, shard_size=4)
    data_bytes = 0
    for shard in cache.shards:
        raw = (cache.directory / shard.file).read_bytes()
        header_length = int.from_bytes(raw[:8], "little")
        assert json.loads(raw[8 : 8 + header_length])  # the rest is tensor data
        data_bytes += len(raw) - 8 - header_length
    assert data_bytes == cache.num_rows * bytes_per_image(1, 16, 32, 2, token_dtype)


def test_a_probe_on_8bit_tokens_gives_its_live_logits_within_the_quantisation(tmp_path):
    backbone = tiny_backbone("vit")
    model = hep.ViTForEfficientProbing.from_backbone(backbone, num_labels=10, num_queries=4).eval()
    options = ExtractionOptions(tmp_path, progress=False)
    cache = cache_tokens_for_model(model, Images(), cached_split(), options, storage=("int8", "float32"))
    assert cache.extraction_report["storage_dtype"] == "int8"
    rows = cache.dataset()
    tokens = torch.stack([rows[i]["tokens"] for i in range(len(rows))])
    with torch.no_grad():
        from_cache, from_images = model(tokens=tokens).logits, model(pixel_values=Images().images).logits
    torch.testing.assert_close(from_cache, from_images, rtol=0.05, atol=0.05)
