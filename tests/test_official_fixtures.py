"""Parity with the official heads in every run: outputs recorded from the official modules (no official code here).

``fixtures/official_heads.safetensors`` holds, per case, an official head's randomised state dict in the official key
layout, and the official logits on stored tokens, computed in float64 (``fixtures/make_official_fixtures.py`` wrote
it from an official checkout; ``test_official_parity.py`` runs the same comparison live when one is at hand). A
converter that maps official keys to the wrong modules, or a pooling whose math drifts, changes the logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_backbone
from safetensors import safe_open
from safetensors.torch import load_file

from hf_efficient_probing import AutoModelForEfficientProbing
from hf_efficient_probing.official import conversion
from hf_efficient_probing.official.conversion import OFFICIAL_POOLINGS, load_official_head

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "official_heads.safetensors"
with safe_open(FIXTURE, "pt") as _handle:
    CASES = json.loads(_handle.metadata()["cases"])


@pytest.fixture(scope="module")
def recorded() -> dict[str, torch.Tensor]:
    return load_file(FIXTURE)


def official_state_dict(recorded: dict, case: str) -> dict[str, torch.Tensor]:
    prefix = f"{case}/"
    return {k[len(prefix) :]: v for k, v in recorded.items() if k.startswith(prefix) and k != f"{case}/logits"}


def test_the_fixture_covers_every_official_pooling():
    assert {case["pooling"] for case in CASES.values()} == set(OFFICIAL_POOLINGS)
    assert sum(case["pooling"] == "ep" for case in CASES.values()) == 3


@pytest.mark.parametrize("case", sorted(CASES))
def test_converted_head_gives_the_official_logits(recorded, case):
    spec = CASES[case]
    head = load_official_head(
        official_state_dict(recorded, case), pooling=spec["pooling"], num_labels=spec["num_labels"], **spec["args"]
    ).double()
    tokens = recorded[f"tokens/{spec['tokens']}"].double()
    with torch.no_grad():
        logits = head(tokens, num_prefix_tokens=spec["num_prefix_tokens"], grid_size=tuple(spec["grid_size"])).logits
    # float64 on both sides: only the order of the additions differs (EP aggregates tokens before projecting them)
    torch.testing.assert_close(logits, recorded[f"{case}/logits"], rtol=1e-9, atol=1e-9)


def test_conversion_command_writes_a_probe_with_the_official_logits(recorded, tmp_path):
    """The command line end to end: a released-format ``ep_head.pth`` -> probe directory -> ``from_pretrained``."""
    spec = CASES["ep_q8_d2"]
    released = {
        "state_dict": {f"head.{k}": v for k, v in official_state_dict(recorded, "ep_q8_d2").items()},
        "meta": {"cls_features": "ep", "ep_queries": spec["args"]["ep_queries"], "d_out": spec["args"]["d_out"]},
    }
    torch.save(released, tmp_path / "ep_head.pth")
    backbone = tmp_path / "backbone"
    tiny_backbone("vit", hidden_size=96, num_attention_heads=4).save_pretrained(backbone)
    conversion.main([str(tmp_path / "ep_head.pth"), "--backbone", str(backbone), "--output", str(tmp_path / "probe")])
    model = AutoModelForEfficientProbing.from_pretrained(tmp_path / "probe").double()
    assert (model.config.num_queries, model.config.d_out) == (8, 2)
    with torch.no_grad():
        logits = model.probe(recorded[f"tokens/{spec['tokens']}"].double()).logits
    torch.testing.assert_close(logits, recorded["ep_q8_d2/logits"], rtol=1e-9, atol=1e-9)
