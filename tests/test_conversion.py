"""Official-code EP/linear heads import into this library's ProbeHead with identical logits."""

import pickle

import pytest
import torch

from hf_efficient_probing import AutoModelForEfficientProbing
from hf_efficient_probing.official.conversion import load_official_head, main
from hf_efficient_probing.probes import ProbeHead


def official_ep_state_dict(dim=64, queries=8, d_out=2, classes=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    width = dim // d_out
    return {
        "0.cls_token": torch.randn(1, queries, dim, generator=generator) * 0.02,
        "0.v.weight": torch.randn(width, dim, generator=generator) / dim**0.5,
        "1.running_mean": torch.randn(width, generator=generator),
        "1.running_var": torch.rand(width, generator=generator) + 0.5,
        "1.num_batches_tracked": torch.tensor(100),
        "2.weight": torch.randn(classes, width, generator=generator),
        "2.bias": torch.randn(classes, generator=generator),
    }


def official_ep_logits(state_dict, tokens):
    """The official head in eval mode, in the official (project-then-aggregate) order."""
    queries, weight = state_dict["0.cls_token"], state_dict["0.v.weight"]
    batch, num_tokens, dim = tokens.shape
    num_queries = queries.shape[1]
    attn = ((queries * dim**-0.5) @ tokens.transpose(-2, -1)).softmax(-1)  # B, M, N
    values = (tokens @ weight.T).reshape(batch, num_tokens, num_queries, -1).permute(0, 2, 1, 3)  # B, M, N, s
    pooled = (attn.unsqueeze(2) @ values).reshape(batch, -1)
    normed = (pooled - state_dict["1.running_mean"]) / torch.sqrt(state_dict["1.running_var"] + 1e-6)
    return normed @ state_dict["2.weight"].T + state_dict["2.bias"]


@pytest.mark.parametrize("prefix", ["", "head."])
def test_ep_head_matches_official_logits(prefix):
    state_dict = official_ep_state_dict()
    tokens = torch.randn(5, 49, 64)
    head = load_official_head(
        {prefix + k: v for k, v in state_dict.items()},
        pooling="ep",
        hidden_size=64,
        num_labels=10,
        ep_queries=8,
        d_out=2,
        num_heads=16,
        abmilp_sa="both",  # official args that do not apply are ignored
    )
    assert isinstance(head, ProbeHead) and not head.training
    torch.testing.assert_close(head(tokens).logits, official_ep_logits(state_dict, tokens), rtol=1e-5, atol=1e-5)


def test_released_ep_head_file_reads_its_meta(tmp_path):
    state_dict = official_ep_state_dict(queries=4, d_out=1)
    meta = {"cls_features": "ep", "ep_queries": 4, "d_out": 1, "model": "vit_base_patch16", "head_epoch": 3}
    torch.save({"state_dict": state_dict, "meta": meta}, tmp_path / "ep_head.pth")
    head = load_official_head(tmp_path / "ep_head.pth")
    tokens = torch.randn(2, 197, 64)  # ep_all heads read [CLS] + patches: one more key/value token
    torch.testing.assert_close(head(tokens).logits, official_ep_logits(state_dict, tokens), rtol=1e-5, atol=1e-5)


def test_linear_head_matches_official_logits():
    generator = torch.Generator().manual_seed(0)
    state_dict = {
        "0.running_mean": torch.randn(32, generator=generator),
        "0.running_var": torch.rand(32, generator=generator) + 0.5,
        "0.num_batches_tracked": torch.tensor(7),
        "1.weight": torch.randn(5, 32, generator=generator),
        "1.bias": torch.randn(5, generator=generator),
    }
    tokens = torch.randn(3, 17, 32)
    head = load_official_head(state_dict, pooling="cls")
    normed = (tokens[:, 0] - state_dict["0.running_mean"]) / torch.sqrt(state_dict["0.running_var"] + 1e-6)
    expected = normed @ state_dict["1.weight"].T + state_dict["1.bias"]
    torch.testing.assert_close(head(tokens, num_prefix_tokens=1).logits, expected)


def test_wrong_official_arguments_are_explained():
    with pytest.raises(ValueError, match="Check the official arguments"):
        load_official_head(
            official_ep_state_dict(queries=8, d_out=2), pooling="ep", hidden_size=64, ep_queries=8, d_out=1
        )
    with pytest.raises(ValueError, match="num_labels=7"):
        load_official_head(official_ep_state_dict(), pooling="ep", num_labels=7, ep_queries=8, d_out=2)
    with pytest.raises(ValueError, match="Unknown official pooling"):
        load_official_head(official_ep_state_dict(), pooling="nope")


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_files_that_need_unpickling_code_are_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": official_ep_state_dict(), "payload": _Payload()}, handle)
    with pytest.raises(ValueError, match="refuses"):
        load_official_head(path, pooling="ep")
    assert "this must never run" not in capsys.readouterr().out


def test_conversion_command_writes_a_loadable_probe(tmp_path, saved_backbone):
    backbone = saved_backbone("vit")
    state_dict = official_ep_state_dict(dim=32, queries=4, d_out=1, classes=3)
    torch.save(
        {"state_dict": state_dict, "meta": {"cls_features": "ep", "ep_queries": 4, "d_out": 1}},
        tmp_path / "ep_head.pth",
    )
    main([str(tmp_path / "ep_head.pth"), "--backbone", backbone, "--output", str(tmp_path / "probe")])
    model = AutoModelForEfficientProbing.from_pretrained(tmp_path / "probe")
    images = torch.randn(2, 3, 32, 32)
    tokens = model.token_reader(model.backbone, images).tokens
    torch.testing.assert_close(
        model(pixel_values=images).logits, official_ep_logits(state_dict, tokens), rtol=1e-5, atol=1e-5
    )
