"""Attention maps over the patch grid, their figures and commands, and the per-query analysis (Figure 4)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from conftest import random_clips, tiny_backbone, write_video
from PIL import Image
from transformers import ViTImageProcessor

from hf_efficient_probing import AutoModelForEfficientProbing
from hf_efficient_probing.analysis import attention_maps, commands
from hf_efficient_probing.analysis.attention_maps import attention_to_grid, count_attention_maps, probe_attention_maps
from hf_efficient_probing.analysis.query_analysis import attention_entropy, query_contributions
from hf_efficient_probing.probes import BASELINE_POOLINGS, EfficientProbing

PROCESSOR = ViTImageProcessor(size={"height": 32, "width": 32})


def probe(kind: str = "ep", backbone=None, **kwargs):
    torch.manual_seed(0)
    backbone = backbone if backbone is not None else tiny_backbone("vit")
    extra = {"num_queries": 4} if kind == "ep" else {}
    return AutoModelForEfficientProbing.from_backbone(backbone, probe=kind, num_labels=3, **{**extra, **kwargs}).eval()


def random_image(seed: int = 0, size=(40, 36)) -> Image.Image:
    pixels = torch.rand(size[1], size[0], 3, generator=torch.Generator().manual_seed(seed)) * 255
    return Image.fromarray(pixels.byte().numpy())


def is_png(path) -> bool:
    with open(path, "rb") as file:
        return file.read(8) == b"\x89PNG\r\n\x1a\n"


def test_attention_to_grid_drops_leading_tokens():
    attentions = torch.arange(2 * 3 * (2 + 6), dtype=torch.float32).view(2, 3, 8)
    grid = attention_to_grid(attentions, (2, 3))
    assert grid.shape == (2, 3, 2, 3)
    assert torch.equal(grid[1, 2, 1], attentions[1, 2, 2 + 3 : 2 + 6])  # second row of patches, after 2 prefix tokens
    with pytest.raises(ValueError, match="patch grid"):
        attention_to_grid(attentions, (3, 3))


def test_ep_maps_are_its_attention_over_patches(images):
    model = probe("ep", token_selection="all")  # [CLS] + 16 patches
    logits, maps = probe_attention_maps(model, images)
    with torch.no_grad():
        outputs = model(pixel_values=images, output_attentions=True)
    assert maps.shape == (4, 4, 4, 4)
    assert torch.equal(logits, outputs.logits)
    assert torch.equal(maps.flatten(2), outputs.probe_attentions[:, :, 1:])
    total = maps.sum((-2, -1)) + outputs.probe_attentions[:, :, 0]
    assert torch.allclose(total, torch.ones_like(total))


@pytest.mark.parametrize("kind", BASELINE_POOLINGS)
def test_baselines_with_attention_draw_maps(kind, images, tmp_path):
    model = probe(kind, tiny_backbone("vit", hidden_size=48))  # 48: divisible by every official head count
    count = count_attention_maps(model)
    if count is None:
        with pytest.raises(ValueError, match="no attention"):
            probe_attention_maps(model, images)
        return
    _, maps = probe_attention_maps(model, images)
    assert maps.shape == (4, count, 4, 4)
    if kind == "mhca":  # drawing is pooling-independent: one figure is enough (and rendering is the slow part)
        path = attention_maps.save_attention_maps(model, random_image(), tmp_path / "maps.png", PROCESSOR)
        assert is_png(path)


def test_linear_probe_has_no_maps(images):
    model = probe("linear", features="cls")
    assert count_attention_maps(model) is None
    with pytest.raises(ValueError, match="no attention to draw"):
        probe_attention_maps(model, images)


def test_figure_has_one_panel_per_query_plus_the_image():
    image = torch.rand(32, 32, 3).numpy()
    figure = attention_maps.plot_attention_maps(image, torch.rand(5, 4, 4), columns=4)
    panels = [axis for axis in figure.axes if axis.images]
    assert len(panels) == 6
    assert all(len(axis.images) == 2 for axis in panels[1:])  # image + overlay


def test_unnormalize_inverts_the_processor():
    image = random_image(size=(32, 32))
    pixel_values = PROCESSOR(image, return_tensors="pt")["pixel_values"][0]
    restored = attention_maps.unnormalize(pixel_values, PROCESSOR)
    expected = torch.from_numpy(np.array(image)).float() / 255
    assert restored.shape == (32, 32, 3)
    assert torch.allclose(torch.from_numpy(restored), expected, atol=1e-5)


def test_attention_maps_command(tmp_path, saved_backbone):
    backbone_dir = saved_backbone("vit")
    PROCESSOR.save_pretrained(backbone_dir)
    model = AutoModelForEfficientProbing.from_backbone(backbone_dir, probe="ep", num_queries=4, num_labels=3)
    model.save_pretrained(tmp_path / "probe")
    random_image().save(tmp_path / "image.png")
    output = commands.attention_maps(
        [
            "--model",
            str(tmp_path / "probe"),
            "--image",
            str(tmp_path / "image.png"),
            "--output",
            str(tmp_path / "o.png"),
        ]
    )
    assert output == tmp_path / "o.png" and is_png(output)


def test_uniform_queries_replace_only_those_queries():
    torch.manual_seed(0)
    pooling = EfficientProbing(32, num_queries=4)
    tokens = torch.randn(2, 7, 32)
    reference = pooling(tokens)
    changed = pooling(tokens, uniform_queries=[1, 3])
    assert torch.equal(changed.attentions[:, [0, 2]], reference.attentions[:, [0, 2]])
    assert torch.allclose(changed.attentions[:, [1, 3]], torch.full((2, 2, 7), 1 / 7))
    # a uniform query reads the mean token through its own block of the value projection
    block = pooling.value.weight.view(4, 8, 32)[1]
    assert torch.allclose(changed.pooled[:, 8:16], tokens.mean(1) @ block.T, atol=1e-6)
    assert torch.equal(changed.pooled[:, :8], reference.pooled[:, :8])


def test_uniform_queries_need_a_probe_with_queries(images):
    with pytest.raises(ValueError, match="uniform_queries needs a probe with learned queries"):
        probe("siglip")(pixel_values=images, uniform_queries=[0])
    with pytest.raises(ValueError, match="no queries to analyse"):
        query_contributions(probe("siglip"), [(images, torch.zeros(len(images), dtype=torch.long))])


def manual_logits(model, tokens, uniform_query=None):
    """EP written out from the paper's formula, with query ``uniform_query`` attending uniformly."""
    pooling = model.probe.pooling
    attention = (pooling.queries * pooling.scale @ tokens.transpose(1, 2)).softmax(-1)
    if uniform_query is not None:
        attention[:, uniform_query] = 1 / tokens.shape[1]
    blocks = pooling.value.weight.view(pooling.num_queries, -1, tokens.shape[-1])
    pooled = torch.cat(
        [torch.einsum("bn,bnd->bd", attention[:, j], tokens) @ blocks[j].T for j in range(pooling.num_queries)], dim=-1
    )
    return model.probe.classifier(model.probe.norm(pooled))


def test_the_models_forward_takes_uniform_queries():
    model = probe("ep")
    with torch.no_grad():
        tokens = model.read_tokens(torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))).tokens
        plain = model(tokens=tokens).logits
        for query in range(model.probe.pooling.num_queries):
            logits = model(tokens=tokens, uniform_queries=[query]).logits
            assert torch.allclose(logits, manual_logits(model, tokens, query), atol=1e-5)
            assert not torch.allclose(logits, plain, atol=1e-5)
        assert torch.equal(model(tokens=tokens).logits, plain), "the override lasts one call: no state is left behind"


def test_query_contributions_match_the_formula():
    model = probe("ep")
    model.train()  # BatchNorm statistics from some features, so that the classifier sees varied inputs
    with torch.no_grad():
        for seed in range(3):
            model(pixel_values=torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(seed)))
    model.eval()
    generator = torch.Generator().manual_seed(5)
    batches = [
        (torch.randn(6, 3, 32, 32, generator=generator), torch.randint(0, 3, (6,), generator=generator))
        for _ in range(2)
    ]
    analysis = query_contributions(model, batches)

    with torch.no_grad():
        tokens = [model.token_reader(model.backbone, pixels).tokens for pixels, _ in batches]
        labels = torch.cat([label for _, label in batches])

        def accuracy(uniform_query=None):
            predictions = torch.cat([manual_logits(model, t, uniform_query).argmax(-1) for t in tokens])
            return 100.0 * float((predictions == labels).double().mean())

        attention = torch.cat([model.probe.pooling.attention(t) for t in tokens])
    assert analysis.num_tokens == 16
    assert analysis.accuracy == pytest.approx(accuracy())
    entropy = torch.distributions.Categorical(probs=attention).entropy().mean(0)
    for row in analysis.queries:
        assert row.entropy == pytest.approx(float(entropy[row.query]), rel=1e-5)
        assert row.accuracy == pytest.approx(accuracy(row.query))
        assert row.accuracy_drop == pytest.approx(analysis.accuracy - row.accuracy)


def test_entropy_of_uniform_and_one_hot_attention():
    attentions = torch.stack([torch.full((5,), 0.2), torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0])])[None]
    assert torch.allclose(attention_entropy(attentions), torch.tensor([[torch.log(torch.tensor(5.0)), 0.0]]))


def test_query_analysis_command(tmp_path, saved_backbone):
    backbone_dir = saved_backbone("vit")
    PROCESSOR.save_pretrained(backbone_dir)
    model = AutoModelForEfficientProbing.from_backbone(backbone_dir, probe="ep", num_queries=4, num_labels=2)
    model.save_pretrained(tmp_path / "probe")
    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for index in range(3):
            random_image(seed=index + 10 * (label == "b")).save(tmp_path / "data" / label / f"{index}.png")
    paths = commands.analyze(
        [
            "--model",
            str(tmp_path / "probe"),
            "--data_dir",
            str(tmp_path / "data"),
            "--output_dir",
            str(tmp_path / "out"),
            "--batch_size",
            "4",
        ]
    )
    with open(paths["csv"]) as file:
        rows = list(csv.DictReader(file))
    assert [int(row["query"]) for row in rows] == [0, 1, 2, 3]
    assert "query |   entropy (nats)" in paths["md"].read_text()
    assert is_png(paths["png"])


# ---------------------------------------------------------------------------------------------------------------
# Video probes: maps per frame


def video_probe(kind: str = "ep", family: str = "videomae", **kwargs):
    torch.manual_seed(0)
    extra = {"num_queries": 4} if kind == "ep" else {}
    backbone = tiny_backbone(family)
    return AutoModelForEfficientProbing.from_backbone(backbone, probe=kind, num_labels=3, **extra, **kwargs).eval()


def test_attention_to_grid_lays_a_clip_out_frame_after_frame():
    attentions = torch.arange(2 * 3 * (1 + 2 * 2 * 3), dtype=torch.float32).view(2, 3, 13)
    grid = attention_to_grid(attentions, (2, 2, 3))
    assert grid.shape == (2, 3, 2, 2, 3)
    assert torch.equal(grid[1, 2, 1, 0], attentions[1, 2, 1 + 6 : 1 + 9])  # second frame, first row, after [CLS]


@pytest.mark.parametrize("family, kind", [("videomae", "ep"), ("timesformer", "vjepa2")])
def test_video_maps_are_the_attention_over_each_frame(family, kind):
    model = video_probe(kind, family, **({"pooler_kwargs": {"num_heads": 4}} if kind != "ep" else {}))
    clips = random_clips()
    logits, maps = probe_attention_maps(model, clips)
    frames = 2 if family == "videomae" else 4  # VideoMAE: tubelets of 2 frames; TimeSformer: one frame a token
    assert maps.shape == (2, count_attention_maps(model), frames, 4, 4) == (2, 4, frames, 4, 4)
    with torch.no_grad():
        outputs = model(pixel_values=clips, output_attentions=True)
    assert torch.equal(maps.flatten(2), outputs.probe_attentions) and torch.equal(logits, outputs.logits)


def test_video_figure_has_a_row_per_frame_and_a_column_per_query():
    frames = torch.rand(3, 32, 32, 3).numpy()
    figure = attention_maps.plot_video_attention_maps(frames, torch.rand(4, 3, 4, 4))
    panels = [axis for axis in figure.axes if axis.images]
    assert len(panels) == 3 * (1 + 4)
    assert [axis.get_title() for axis in panels[:5]] == ["frame 0", "query 0", "query 1", "query 2", "query 3"]
    assert [axis.get_title() for axis in panels[::5]] == ["frame 0", "frame 1", "frame 2"]
    assert sum(len(axis.images) == 2 for axis in panels) == 3 * 4  # frame + overlay, for each query and frame


def test_video_attention_maps_command(tmp_path, saved_backbone):
    from transformers import VideoMAEVideoProcessor

    backbone_dir = saved_backbone("videomae")
    VideoMAEVideoProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        backbone_dir
    )
    model = AutoModelForEfficientProbing.from_backbone(backbone_dir, probe="ep", num_queries=4, num_labels=3)
    model.save_pretrained(tmp_path / "probe")
    frames = (torch.rand(12, 3, 40, 48, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    video = write_video(tmp_path / "clip.mp4", frames)
    output = commands.attention_maps(
        [
            "--model",
            str(tmp_path / "probe"),
            "--video",
            str(video),
            "--frame_stride",
            "2",
            "--output",
            str(tmp_path / "o.png"),
        ]
    )
    assert output == tmp_path / "o.png" and is_png(output)
    with pytest.raises(SystemExit):  # an image for a video probe: the parser says to pass --video
        commands.attention_maps(["--model", str(tmp_path / "probe"), "--image", str(video)])
