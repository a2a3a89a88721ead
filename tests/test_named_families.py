"""Named heads register themselves: a new family's head is one small class, picked up by the Auto entry points."""

import ast
import inspect

import pytest
import torch
from conftest import TINY
from transformers import AutoConfig, AutoModel

import hf_efficient_probing as hep
from hf_efficient_probing import modeling_families
from hf_efficient_probing.modeling_probing import NAMED_PROBE_CLASSES

THROWAWAY_FAMILY = "mlcd_vision_model"  # a transformers family outside the backbone table


@pytest.fixture
def throwaway_head():
    assert ("efficient_probing", THROWAWAY_FAMILY) not in NAMED_PROBE_CLASSES

    class MLCDVisionForEfficientProbing(hep.VisionModelForEfficientProbing, family=THROWAWAY_FAMILY):
        """Efficient Probing over MLCD vision backbones."""

    yield MLCDVisionForEfficientProbing
    del NAMED_PROBE_CLASSES[("efficient_probing", THROWAWAY_FAMILY)]


def test_a_new_family_is_one_class(throwaway_head, tmp_path):
    torch.manual_seed(0)
    backbone = AutoModel.from_config(AutoConfig.for_model(THROWAWAY_FAMILY, **TINY)).eval()
    backbone.save_pretrained(tmp_path / "backbone")
    model = hep.AutoModelForEfficientProbing.from_backbone(str(tmp_path / "backbone"), num_labels=3, num_queries=4)
    assert type(model) is throwaway_head and model.backbone_model_type == THROWAWAY_FAMILY
    model.eval().save_pretrained(tmp_path / "probe")
    loaded = hep.AutoModelForEfficientProbing.from_pretrained(tmp_path / "probe")
    assert type(loaded) is throwaway_head
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded(pixel_values=images).logits, model(pixel_values=images).logits)
    with pytest.raises(ValueError, match="probes 'mlcd_vision_model' backbones"):
        throwaway_head.from_backbone(backbone=AutoModel.from_config(AutoConfig.for_model("vit", **TINY)), num_labels=3)


def test_a_family_has_one_head_per_probe_kind(throwaway_head):
    with pytest.raises(ValueError, match="already the 'efficient_probing' head of 'mlcd_vision_model'"):

        class Again(hep.VisionModelForEfficientProbing, family=THROWAWAY_FAMILY):
            """A second EP head for the same family."""


def test_every_named_head_is_exported_and_written_out():
    heads = {cls.__name__ for cls in NAMED_PROBE_CLASSES.values()}
    assert heads <= set(hep.__all__)
    assert all(getattr(hep, cls.__name__) is cls for cls in NAMED_PROBE_CLASSES.values())
    # Each head is a class statement in modeling_families (importable by name for a reader and static tools alike).
    tree = ast.parse(inspect.getsource(modeling_families))
    assert heads == {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
