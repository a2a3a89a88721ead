"""Configs: documented defaults, impossible settings rejected with the allowed values, untrusted JSON handled."""

import json
import warnings

import pytest
import torch
from conftest import tiny_backbone, tiny_backbone_config
from huggingface_hub.errors import StrictDataclassError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hf_efficient_probing as hep

CONFIG_ERRORS = (ValueError, TypeError, KeyError, StrictDataclassError)


def test_defaults_are_the_papers():
    config = hep.EfficientProbingConfig()
    assert (config.num_queries, config.d_out, config.value_bias) == (32, 1, False)
    assert config.token_selection == "patch" and config.feature_layers == [-1]
    assert config.freeze_backbone and config.batch_norm_eps == 1e-6
    assert config.backbone_config.model_type == "vit"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_queries=10), r"valid num_queries are \[1, 2, 4, 8, 16, 32\]"),
        (dict(num_queries=0), "num_queries=0"),
        (dict(num_queries=1.0), r"num_queries must be an integer, got 1\.0"),
        (dict(num_queries=True), "num_queries must be an integer, got True"),
        (dict(num_queries=4, d_out=3), "d_out must divide"),
        (dict(num_queries=4, feature_layers=[3]), r"out of range.*0 \(embeddings\) to 2"),
        (dict(num_queries=4, feature_layers=[-4]), "out of range"),
        (dict(num_queries=4, feature_layers=[]), "non-empty"),
        (dict(num_queries=4, token_selection="cls"), r"token_selection must be one of \('patch', 'all'\)"),
    ],
)
def test_impossible_ep_settings_fail_at_construction(kwargs, message):
    with pytest.raises(StrictDataclassError, match=message):
        hep.EfficientProbingConfig(backbone_config=tiny_backbone_config("vit"), **kwargs)


def test_feature_layers_widen_the_tokens_and_are_validated_against_the_width():
    config = hep.EfficientProbingConfig(
        backbone_config=tiny_backbone_config("vit"), num_queries=64, feature_layers=[1, 2]
    )
    assert config.token_width == 64
    with pytest.raises(StrictDataclassError, match="token width \\(32\\)"):
        hep.EfficientProbingConfig(backbone_config=tiny_backbone_config("vit"), num_queries=64)


def test_unknown_probe_kind():
    with pytest.raises(ValueError, match="Unknown probe 'nope'"):
        hep.AutoModelForEfficientProbing.from_backbone(tiny_backbone("vit"), probe="nope", num_labels=2)
    with pytest.raises(StrictDataclassError, match="features must be one of"):
        hep.LinearProbingConfig(backbone_config=tiny_backbone_config("vit"), features="max")


def test_json_round_trip(tmp_path):
    config = hep.EfficientProbingConfig(
        backbone_config=tiny_backbone_config("dinov2"),
        num_queries=8,
        d_out=2,
        backbone_name_or_path="facebook/dinov2-small",
        backbone_revision="v1",
        num_labels=3,
        feature_layers=[1, -1],
    )
    config.save_pretrained(tmp_path)
    loaded = hep.EfficientProbingConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert type(loaded.backbone_config).__name__ == "Dinov2Config"


def test_fields_from_a_newer_version_warn(tmp_path):
    config = hep.EfficientProbingConfig(backbone_config=tiny_backbone_config("vit"), num_queries=4)
    data = config.to_dict()
    data["query_dropout"] = 0.1
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.warns(UserWarning, match=r"does not know: \['query_dropout'\].*newer version"):
        hep.EfficientProbingConfig.from_pretrained(tmp_path)
    config.save_pretrained(tmp_path / "current")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hep.EfficientProbingConfig.from_pretrained(tmp_path / "current")


FIELD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 100),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.lists(st.integers(-5, 5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
FIELDS = [
    "num_queries",
    "d_out",
    "value_bias",
    "feature_layers",
    "token_selection",
    "apply_final_norm",
    "freeze_backbone",
    "batch_norm_eps",
    "backbone_config",
    "num_labels",
    "id2label",
    "features",
    "whatever",
]


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(st.dictionaries(st.sampled_from(FIELDS), FIELD_VALUES, max_size=5), st.sampled_from(["efficient", "linear"]))
def test_fuzzed_config_json_fails_cleanly_or_is_usable(fields, kind):
    """A config.json either fails with a clear error, or gives a config that validates, survives a JSON round trip
    unchanged and builds a model that runs."""
    config_class = hep.EfficientProbingConfig if kind == "efficient" else hep.LinearProbingConfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            config = config_class.from_dict({"backbone_config": tiny_backbone_config("vit").to_dict(), **fields})
        except CONFIG_ERRORS:
            return
        config.validate()
        reloaded = config_class.from_dict(json.loads(config.to_json_string()))
    assert reloaded.to_json_string() == config.to_json_string()
    model = hep.AutoModelForEfficientProbing.from_config(config).eval()
    with torch.no_grad():
        logits = model(pixel_values=torch.randn(1, 3, 32, 32)).logits
    assert logits.shape == (1, config.num_labels)
