"""A new pooling is one small class with ``@register_pooling``: configs, the Auto entry points and saving find it."""

import pytest
import torch
from conftest import tiny_backbone
from huggingface_hub.errors import StrictDataclassError

import hf_efficient_probing as hep
from hf_efficient_probing.probes import PROBE_KINDS, Pooling, PoolingOutput, register_pooling
from hf_efficient_probing.training.arguments import ProbeArguments
from hf_efficient_probing.training.job import probe_config_kwargs

NAME = "throwaway_max"


@pytest.fixture
def max_pooling():
    assert NAME not in PROBE_KINDS

    @register_pooling(NAME)
    class MaxPooling(Pooling):
        """The largest value of each channel over the patch tokens, scaled by one learned number."""

        def __init__(self, hidden_size: int, scale: float = 1.0):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(scale))
            self.out_features = hidden_size

        def forward(self, tokens, num_prefix_tokens=0, grid_size=None, token_mask=None):
            return PoolingOutput(self.scale * tokens[:, num_prefix_tokens:].amax(dim=1))

    yield MaxPooling
    del PROBE_KINDS[NAME]


def test_a_registered_pooling_is_a_probe_kind(max_pooling, tmp_path):
    backbone = tiny_backbone("vit")
    model = hep.AutoModelForEfficientProbing.from_backbone(
        backbone, probe=NAME, num_labels=3, pooler_kwargs={"scale": 2.0}
    ).eval()
    assert isinstance(model.config, hep.AttentiveProbingConfig) and model.config.pooler_type == NAME
    assert isinstance(model.probe.pooling, max_pooling)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        # the last block's patch tokens, before the final norm (the paper's reading of a ViT)
        tokens = backbone(pixel_values=images, output_hidden_states=True).hidden_states[-1][:, 1:]
        pooled = 2.0 * tokens.amax(dim=1)
        norm = model.probe.norm
        expected = model.probe.classifier((pooled - norm.running_mean) / (norm.running_var + norm.eps).sqrt())
        torch.testing.assert_close(model(pixel_values=images).logits, expected)

    model.save_pretrained(tmp_path / "probe")
    loaded = hep.AutoModelForEfficientProbing.from_pretrained(tmp_path / "probe").eval()
    assert loaded.probe.pooling.scale.item() == 2.0
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=images).logits, model(pixel_values=images).logits)
    # the command line's --probe takes it too, with its config's fields
    assert probe_config_kwargs(ProbeArguments(probe=[NAME], token_selection="patch")) == {
        NAME: {"token_selection": "patch"}
    }


def test_a_registered_pooling_checks_its_settings_and_its_name(max_pooling):
    with pytest.raises(StrictDataclassError, match=r"pooler_kwargs \['width'\] are not hyper-parameters"):
        hep.AttentiveProbingConfig(pooler_type=NAME, pooler_kwargs={"width": 3})
    with pytest.raises(ValueError, match=f"already registered as '{NAME}'"):
        register_pooling(NAME)(max_pooling)
    with pytest.raises(TypeError, match="takes a subclass of Pooling"):
        register_pooling("not_a_pooling")(torch.nn.Linear)


def test_an_unregistered_pooling_is_refused_with_the_registered_names():
    with pytest.raises(ValueError, match=r"Unknown probe 'nope'; choose one of \[.*'ep'.*\]"):
        hep.AutoModelForEfficientProbing.from_backbone("never/loaded", probe="nope", num_labels=3)
