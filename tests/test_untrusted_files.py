"""Weights come only from safetensors (or weights-only torch.load for official heads); bad files fail cleanly."""

import shutil

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import SafetensorError

import hf_efficient_probing as hep
from hf_efficient_probing.conversion import load_official_head

CLEAN_ERRORS = (ValueError, OSError, SafetensorError, RuntimeError)


@pytest.fixture
def probe_dir(saved_backbone, tmp_path):
    model = hep.ViTForEfficientProbing.from_backbone(saved_backbone("vit"), num_labels=3, num_queries=4)
    model.save_pretrained(tmp_path / "probe")
    return tmp_path / "probe"


def test_pickle_only_repository_is_refused(probe_dir):
    weights = probe_dir / "model.safetensors"
    torch.save({"probe.classifier.weight": torch.zeros(3, 32)}, probe_dir / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(OSError, match="only pickle weights.*safetensors only"):
        hep.AutoModelForEfficientProbing.from_pretrained(probe_dir)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_malformed_safetensors_fail_cleanly(probe_dir, tmp_path_factory, data):
    original = (probe_dir / "model.safetensors").read_bytes()
    target = tmp_path_factory.mktemp("fuzzed")
    shutil.copy(probe_dir / "config.json", target / "config.json")
    mode = data.draw(st.sampled_from(["truncate", "flip", "random"]))
    if mode == "truncate":
        blob = original[: data.draw(st.integers(0, len(original) - 1))]
    elif mode == "flip":
        position = data.draw(st.integers(0, min(len(original) - 1, 300)))
        blob = original[:position] + bytes([original[position] ^ 0xFF]) + original[position + 1 :]
    else:
        blob = data.draw(st.binary(max_size=512))
    (target / "model.safetensors").write_bytes(blob)
    try:
        hep.AutoModelForEfficientProbing.from_pretrained(target)
    except CLEAN_ERRORS:
        return
    # a flipped byte inside tensor data is still a valid file: it loads, with a different value


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=2048))
def test_malformed_official_checkpoints_fail_cleanly(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("official") / "ep_head.pth"
    path.write_bytes(blob)
    with pytest.raises(ValueError):
        load_official_head(path, pooling="ep")
