"""One backbone pass for every reader: a cache holds every token of its layers, any reader of them is served from it,
and a later reader of other layers extracts only those."""

from __future__ import annotations

import pytest
import torch
from conftest import cached_split, tiny_backbone
from test_cache import Images, count_backbone_rows, single_thread  # noqa: F401

import hf_efficient_probing as hep
from hf_efficient_probing.cache import ExtractionOptions, TokenCache, cache_tokens_for_model
from hf_efficient_probing.cache.groups import cover_layers

NUM_ROWS = len(Images())
FLOAT32 = ("float32", "float32")


def probe(backbone, kind: str, layers, **settings):
    return hep.AutoModelForEfficientProbing.from_backbone(
        backbone, probe=kind, num_labels=NUM_ROWS, feature_layers=layers, **settings
    ).eval()


def cached(model, root, reader=None):
    options = ExtractionOptions(root, batch_size=4, progress=False)
    return cache_tokens_for_model(model, Images(), cached_split(), options, storage=FLOAT32, reader=reader)


def test_ep_then_linear_extracts_once_and_a_new_layer_extracts_only_that_layer(tmp_path):
    backbone = tiny_backbone("vit")
    seen = count_backbone_rows(backbone)
    ep = cached(probe(backbone, "ep", [1, 2], num_queries=4), tmp_path)  # patch tokens
    linear = cached(probe(backbone, "linear", [1, 2], features="cls"), tmp_path)  # the [CLS] token
    assert sum(seen) == NUM_ROWS, "the [CLS] reader is served by the patch reader's cache: one backbone pass"
    assert linear.extraction_report["reused"] and linear.groups[0].directory == ep.groups[0].directory
    assert ep.dataset()[0]["tokens"].shape == (16, 64) and linear.dataset()[0]["tokens"].shape == (17, 64)

    wider = cached(probe(backbone, "ep", [0, 2], num_queries=4), tmp_path)
    assert sum(seen) == 2 * NUM_ROWS, "one more pass, for the layer no cache holds"
    assert [group.feature_layers for group in wider.groups] == [(1, 2), (0,)], "layer 0 alone is extracted"
    assert not wider.extraction_report["reused"] and wider.extraction_report["layer_groups"] == 2
    assert sorted(path.name.split("-layers-")[1] for path in tmp_path.iterdir()) == ["0", "1-2"]
    again = cached(probe(backbone, "linear", [0], features="gap"), tmp_path)
    assert sum(seen) == 2 * NUM_ROWS and again.extraction_report["reused"]


READERS = {
    "ep, patches of two layers": ("ep", [1, 2], dict(num_queries=4)),
    "ep, [CLS] + patches, layers swapped": ("ep", [2, 1], dict(num_queries=4, token_selection="all")),
    "linear on [CLS]": ("linear", [-1], dict(features="cls")),
    "linear on the patches' mean": ("linear", [1], dict(features="gap")),
}


@pytest.mark.parametrize("name", READERS)
def test_a_cached_reader_equals_the_live_reader(tmp_path, name):
    """Every reader is served from one cache (extracted here by another reader first) and sees exactly its live
    tokens, so its logits on cached tokens are its logits on the images."""
    backbone = tiny_backbone("vit")
    cached(probe(backbone, "ep", [0, 1, 2], num_queries=4), tmp_path)  # layers 0-2, patches: another reader
    kind, layers, settings = READERS[name]
    model = probe(backbone, kind, layers, **settings)
    rows = cached(model, tmp_path).dataset()
    tokens = torch.stack([rows[i]["tokens"] for i in range(len(rows))])
    images = Images().images
    with torch.no_grad():
        live = model.token_reader(backbone, images).tokens
        torch.testing.assert_close(tokens, live, rtol=0, atol=0)
        torch.testing.assert_close(model(tokens=tokens).logits, model(pixel_values=images).logits)


def test_an_incomplete_group_is_not_read(tmp_path):
    backbone = tiny_backbone("vit")
    first = cached(probe(backbone, "ep", [1, 2], num_queries=4), tmp_path)
    manifest = first.groups[0].directory / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"complete": true', '"complete": false'))
    seen = count_backbone_rows(backbone)
    again = cached(probe(backbone, "linear", [2], features="cls"), tmp_path)
    assert sum(seen) == NUM_ROWS and [group.feature_layers for group in again.groups] == [(2,)]
    assert TokenCache(again.groups[0].directory).feature_layers == (2,)


@pytest.mark.parametrize(
    ("wanted", "groups", "chosen", "missing"),
    [
        ([2], [], [], (2,)),
        ([1, 2], [(1,), (1, 2)], [(1, 2)], ()),  # fewest groups: the one holding both
        ([0, 1, 2], [(1,), (2, 3)], [(1,), (2, 3)], (0,)),
        ([3, 0], [(1, 2)], [], (0, 3)),
    ],
)
def test_cover_layers_reads_fewest_groups_and_extracts_the_rest(wanted, groups, chosen, missing):
    assert cover_layers(wanted, groups) == (chosen, missing)
