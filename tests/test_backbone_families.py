"""Every backbone family of the table: ViT-like sequences, CNN feature maps, hierarchical stages, NaFlex, timm and
video (space-time tokens of clips).

One table-driven test trains, saves, reloads and caches a probe on each family; the others check the tokens against
the models' own outputs (and timm's own forward), padding (NaFlex) against the images one by one, and the errors.
"""

import json
import math
import re
from pathlib import Path

import pytest
import torch
from conftest import cached_split, random_clips, tiny_backbone, tiny_backbone_config
from safetensors import safe_open
from transformers import AutoConfig, AutoModel

import hf_efficient_probing as hep
from hf_efficient_probing.analysis.attention_maps import probe_attention_maps
from hf_efficient_probing.backbones import FAMILIES, VIDEO_FAMILIES, TokenReader, naflex_patches
from hf_efficient_probing.cache import ExtractionOptions, cache_tokens_for_model
from hf_efficient_probing.probes import PROBE_KINDS

# LeViT, MobileNetV2 and MobileViT downsample 32x or more: they need larger images for a grid of several tokens.
IMAGE_SIZE = {"levit": 64, "mobilenet_v2": 64, "mobilevit": 64}
# Leading tokens before the patches of each family's last layer (the rest have none).
LEADING_TOKENS = {
    "vit": 1,
    "vit_mae": 1,
    "vit_msn": 1,
    "deit": 2,
    "beit": 1,
    "data2vec-vision": 1,
    "dinov2": 1,
    "dinov2_with_registers": 3,
    "dinov3_vit": 3,
    "clip_vision_model": 1,
    "pvt": 1,
    "timm_wrapper": 3,
    "vivit": 1,
    "timesformer": 1,
}
# Whether the model's own ``last_hidden_state`` is after its final norm; reading the last layer with that norm (or
# without, where there is none) must then give exactly these tokens.
LAST_STATE_NORMED = {
    **dict.fromkeys(["vit", "vit_mae", "vit_msn", "deit", "beit", "data2vec-vision", "ijepa", "dinov2"], True),
    **dict.fromkeys(["dinov2_with_registers", "dinov3_vit", "siglip_vision_model", "aimv2_vision_model"], True),
    **dict.fromkeys(["siglip2_vision_model", "swin", "swinv2", "focalnet", "timm_wrapper"], True),
    **dict.fromkeys(["vjepa2", "vivit", "timesformer"], True),  # VideoMAE with use_mean_pooling has no final norm
}


def images_for(family: str, batch: int = 2, seed: int = 1) -> torch.Tensor:
    """Images, or for a video family clips ``[B, T, 3, H, W]``."""
    if family in VIDEO_FAMILIES:
        return random_clips(batch, seed)
    size = IMAGE_SIZE.get(family, 32)
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


class LabelledImages(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return {"pixel_values": self.images[index], "labels": index % 3}


def test_every_family_of_the_table_is_tested():
    from conftest import SEQUENCE_FAMILIES, TINY_CONFIGS

    assert set(FAMILIES) == set(SEQUENCE_FAMILIES) | set(TINY_CONFIGS)


def readme_family_rows() -> dict[str, list[str]]:
    """The README's backbone table: each ``model_type`` of a row's first cell, with the row's cells."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = text[text.index("| family (`model_type`) |") :]
    table = table[: table.index("\n\n")]  # the table ends at the first blank line
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| `")]
    return {name: cells for cells in rows for name in re.findall(r"`([^`]+)`", cells[0])}


def test_the_readme_table_has_every_family_and_the_video_rows_match_the_code():
    """The user's table of families is the code's: every family once, the video ones marked, with the leading
    tokens, the final norm and the token count of their default configs that the reader gives."""
    rows = readme_family_rows()
    assert set(rows) == set(FAMILIES)
    assert {name for name, cells in rows.items() if "(video)" in cells[0]} == set(VIDEO_FAMILIES)
    for name in VIDEO_FAMILIES:
        family, config = FAMILIES[name], AutoConfig.for_model(name)
        _, tokens, leading, final_norm, _ = rows[name]
        assert leading == ("[CLS]" if family.has_cls_token else "none"), name
        assert final_norm.startswith(f"`{family.final_norm}`"), name
        frames, height, width = family.video.token_grid(config, family.video.native_frames(config))
        assert f"{frames} x {height} x {width} = {frames * height * width} tokens" in tokens, name


def test_every_family_trains_saves_reloads_and_caches(any_family, saved_backbone, tmp_path):
    model = hep.AutoModelForEfficientProbing.from_backbone(
        saved_backbone(any_family), probe="ep", num_labels=3, num_queries=4
    )
    assert model.config.token_width == model.token_reader.token_width
    images, labels = images_for(any_family, batch=4), torch.tensor([0, 1, 2, 0])
    model.train()
    output = model(pixel_values=images, labels=labels)
    output.loss.backward()
    assert torch.isfinite(output.loss)
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.probe.parameters())

    model.eval().save_pretrained(tmp_path / "probe")
    with safe_open(str(tmp_path / "probe" / "model.safetensors"), framework="pt") as checkpoint:
        assert all(key.startswith("probe.") for key in checkpoint.keys())
    reloaded = hep.AutoModelForEfficientProbing.from_pretrained(tmp_path / "probe")
    assert type(reloaded) is type(model) and type(model).backbone_model_type == any_family
    with torch.no_grad():
        logits = model(pixel_values=images).logits
        torch.testing.assert_close(reloaded(pixel_values=images).logits, logits, rtol=0, atol=0)

    cache = cache_tokens_for_model(
        reloaded,
        LabelledImages(images),
        cached_split(),
        ExtractionOptions(tmp_path / "cache", progress=False),
        storage=("float32", "float32"),  # compared with live float32 logits below
    )
    rows = cache.dataset()
    cached = torch.stack([rows[index]["tokens"] for index in range(len(rows))])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(tokens=cached).logits, logits)


def test_tokens_are_the_models_own_last_state(any_family):
    """The last layer's tokens equal the model's own ``last_hidden_state``, maps laid out row-major as
    ``[B, H * W, C]`` and leading tokens dropped."""
    backbone = tiny_backbone(any_family)
    images = images_for(any_family)
    reader = TokenReader(backbone.config, [-1], apply_final_norm=LAST_STATE_NORMED.get(any_family, False))
    with torch.no_grad():
        read = reader(backbone, images)
        if any_family == "siglip2_vision_model":
            patches, mask, shapes = naflex_patches(images, backbone.config.patch_size)
            own = backbone(pixel_values=patches, pixel_attention_mask=mask, spatial_shapes=shapes)
        elif any_family == "vjepa2":
            own = backbone(pixel_values_videos=images, skip_predictor=True)
        else:
            kwargs = {"noise": torch.arange(16.0).expand(2, -1)} if any_family == "vit_mae" else {}  # unshuffled
            own = backbone(pixel_values=images, **kwargs)
    expected = own.last_hidden_state
    if any_family == "timesformer":  # its own order is (rows, columns, frames): the reader's is frame after frame
        expected = expected[:, 1:].unflatten(1, (4, 4, 4)).permute(0, 3, 1, 2, 4).flatten(1, 3)
        assert read.grid_size == (4, 4, 4)
    elif expected.ndim == 4:
        assert read.grid_size == tuple(expected.shape[-2:])
        expected = expected.flatten(2).transpose(1, 2)
    else:
        expected = expected[:, LEADING_TOKENS.get(any_family, 0) :]
    assert math.prod(read.grid_size) == expected.shape[1]
    torch.testing.assert_close(read.tokens, expected)


@pytest.mark.parametrize("family, layer", [("swin", 1), ("hiera", 0), ("convnext", 1), ("pvt", 0)])
def test_stage_tokens_follow_the_models_own_spatial_layout(family, layer):
    """An earlier stage, against the model's own per-stage maps (``reshaped_hidden_states``, or the feature maps)."""
    backbone = tiny_backbone(family)
    images = images_for(family)
    read = TokenReader(backbone.config, [layer])(backbone, images)
    with torch.no_grad():
        own = backbone(pixel_values=images, output_hidden_states=True)
    if family == "hiera":  # channels last
        maps = own.reshaped_hidden_states[layer].permute(0, 3, 1, 2)
    elif family == "swin":
        maps = own.reshaped_hidden_states[layer]
    elif family == "convnext":
        maps = own.hidden_states[layer]
    else:  # PVT's first stage: a sequence on the 8x8 grid of its 4-pixel patches, no [CLS]
        maps = own.hidden_states[layer].transpose(1, 2).reshape(2, -1, 8, 8)
    assert read.grid_size == tuple(maps.shape[-2:])
    torch.testing.assert_close(read.tokens, maps.flatten(2).transpose(1, 2))


def timm_backbone(**model_args):
    args = {**dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, reg_tokens=2), **model_args}
    config = AutoConfig.for_model("timm_wrapper", architecture="vit_small_patch16_224", model_args=args)
    torch.manual_seed(0)
    return AutoModel.from_config(config).eval()


def test_timm_tokens_equal_timms_own_forward():
    backbone = timm_backbone()
    timm_model = backbone.timm_model
    images = images_for("timm_wrapper")
    with torch.no_grad():
        features = timm_model.forward_features(images)  # [CLS], 2 registers, then patches, after timm's norm
        first_block = timm_model.forward_intermediates(images, indices=[0], intermediates_only=True)[0]
        last_normed = TokenReader(backbone.config, [-1], "all", apply_final_norm=True)(backbone, images)
        first = TokenReader(backbone.config, [0])(backbone, images)
    assert timm_model.num_prefix_tokens == 3
    torch.testing.assert_close(last_normed.tokens, torch.cat([features[:, :1], features[:, 3:]], dim=1))
    torch.testing.assert_close(first.tokens, first_block.flatten(2).transpose(1, 2))
    assert first.grid_size == (4, 4)


def test_timm_cnn_tokens_equal_timms_own_intermediates():
    config = AutoConfig.for_model("timm_wrapper", architecture="test_resnet")
    torch.manual_seed(0)
    backbone = AutoModel.from_config(config).eval()
    images = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        own = backbone.timm_model.forward_intermediates(images, intermediates_only=True)
        reads = [TokenReader(config, [index])(backbone, images) for index in range(-len(own), len(own))]
    for index, read in zip(range(-len(own), len(own)), reads, strict=True):  # layers are timm's block indices
        torch.testing.assert_close(read.tokens, own[index].flatten(2).transpose(1, 2))
        assert read.grid_size == tuple(own[index].shape[-2:])
    assert reads[-2].grid_size[0] != reads[-2].grid_size[1]


def test_probe_only_timm_probe_refuses_a_backbone_giving_other_tokens(tmp_path):
    model = hep.AutoModelForEfficientProbing.from_backbone(timm_backbone(), num_labels=3, num_queries=4)
    model.config.backbone_name_or_path = "timm/some-checkpoint"
    model.save_pretrained(tmp_path / "probe")
    with pytest.raises(ValueError, match="tokens of width 32.*gives tokens of width 48"):
        hep.AutoModelForEfficientProbing.from_pretrained(tmp_path / "probe", backbone=timm_backbone(embed_dim=48))


def test_layers_of_different_stages_cannot_be_concatenated():
    config = tiny_backbone_config("convnext")
    with pytest.raises(Exception, match=r"different widths or grids.*0: width 16, grid 8x8.*2: width 32, grid 4x4"):
        hep.EfficientProbingConfig(backbone_config=config, feature_layers=[1, 2], num_queries=4)
    config = hep.EfficientProbingConfig(backbone_config=config, feature_layers=[0, 1], num_queries=4)
    assert config.token_width == 32  # two 16-wide states on the same 8x8 grid


def test_a_loaded_vit_mae_reads_every_patch_in_order():
    """A user's own ViTMAEModel (masking 75 % of its patches by default) is set to read all of them, unshuffled."""
    config = tiny_backbone_config("vit_mae", mask_ratio=0.75)
    assert config.mask_ratio == 0.75
    torch.manual_seed(0)
    backbone = AutoModel.from_config(config).eval()
    model = hep.AutoModelForEfficientProbing.from_backbone(backbone, num_labels=3, num_queries=4).eval()
    images = images_for("vit_mae")
    read = model.token_reader(model.backbone, images)
    with torch.no_grad():
        noise = torch.arange(16.0).expand(2, -1)
        own = backbone(pixel_values=images, noise=noise, output_hidden_states=True).hidden_states[-1][:, 1:]
    assert read.tokens.shape[1] == 16
    torch.testing.assert_close(read.tokens, own)


def naflex_batch(backbone, images: list[torch.Tensor]):
    """Images of different sizes as one padded NaFlex batch, as SigLIP2's image processor lays it out."""
    patch = backbone.config.patch_size
    parts = [naflex_patches(image[None], patch) for image in images]
    length = max(part[0].shape[1] for part in parts)
    patches = torch.zeros(len(images), length, parts[0][0].shape[-1])
    mask = torch.zeros(len(images), length, dtype=torch.long)
    for index, (image_patches, _, _) in enumerate(parts):
        patches[index, : image_patches.shape[1]] = image_patches[0]
        patches[index, image_patches.shape[1] :] = 7.0  # padding holds garbage: it must not matter
        mask[index, : image_patches.shape[1]] = 1
    return patches, mask, torch.cat([shapes for _, _, shapes in parts])


@pytest.mark.parametrize("probe", sorted(PROBE_KINDS))
def test_padded_naflex_batches_give_the_logits_of_each_image_alone(probe):
    backbone = tiny_backbone("siglip2_vision_model")
    kwargs = {"ep": dict(num_queries=4), "linear": dict(features="gap")}.get(probe, {})
    if probe not in ("ep", "linear"):
        kwargs["pooler_kwargs"] = {"num_heads": 4} if probe in ("aim", "jepa", "mhca", "esimpool") else None
    model = hep.AutoModelForEfficientProbing.from_backbone(backbone, probe=probe, num_labels=3, **kwargs).eval()
    generator = torch.Generator().manual_seed(0)
    images = [torch.randn(3, 32, 32, generator=generator), torch.randn(3, 16, 24, generator=generator)]
    patches, mask, shapes = naflex_batch(backbone, images)
    with torch.no_grad():
        if probe in ("cbam", "clip"):
            with pytest.raises(ValueError, match="cannot read padded tokens"):
                model(pixel_values=patches, pixel_attention_mask=mask, spatial_shapes=shapes)
            return
        batched = model(pixel_values=patches, pixel_attention_mask=mask, spatial_shapes=shapes).logits
        alone = torch.cat([model(pixel_values=image[None]).logits for image in images])
        read = model.token_reader(backbone, patches, pixel_attention_mask=mask, spatial_shapes=shapes)
        from_tokens = model(tokens=read.tokens, token_mask=read.mask).logits
    assert read.mask is not None and read.grid_size is None
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(from_tokens, batched)


def test_attention_maps_follow_a_cnns_non_square_grid():
    backbone = tiny_backbone("convnext")
    model = hep.AutoModelForEfficientProbing.from_backbone(backbone, num_labels=3, num_queries=4).eval()
    images = torch.randn(2, 3, 32, 48)
    logits, maps = probe_attention_maps(model, images)
    with torch.no_grad():
        output = model(pixel_values=images, output_attentions=True)
    assert maps.shape == (2, 4, 4, 6)
    torch.testing.assert_close(maps.flatten(2), output.probe_attentions)
    torch.testing.assert_close(logits, output.logits)


def test_the_final_norm_of_a_hierarchical_model_fits_its_last_stage_only():
    backbone = tiny_backbone("swin")
    images = images_for("swin")
    normed = TokenReader(backbone.config, [-1], apply_final_norm=True)(backbone, images)
    with torch.no_grad():
        torch.testing.assert_close(normed.tokens, backbone(pixel_values=images).last_hidden_state)
    with pytest.raises(ValueError, match=r"normalises 32 channels, but layers \[0\] are 16 wide"):
        TokenReader(backbone.config, [0], apply_final_norm=True)(backbone, images)


def test_timm_class_token_and_final_norm_follow_the_timm_model():
    """A timm ViT has a [CLS] token and a final norm; a timm ResNet has neither, and says so."""
    vit = timm_backbone()
    linear = hep.AutoModelForEfficientProbing.from_backbone(
        vit, probe="linear", features="cls", apply_final_norm=True, num_labels=3
    ).eval()
    images = images_for("timm_wrapper")
    with torch.no_grad():
        cls_token = vit.timm_model.forward_features(images)[:, 0]  # timm's own [CLS], after its norm
        expected = linear.probe.classifier(linear.probe.norm(cls_token))
        torch.testing.assert_close(linear(pixel_values=images).logits, expected)
    resnet = AutoConfig.for_model("timm_wrapper", architecture="test_resnet")
    with pytest.raises(Exception, match=r"reads the \[CLS\] token, but 'timm_wrapper' backbones have none"):
        hep.LinearProbingConfig(backbone_config=resnet, features="cls")
    torch.manual_seed(0)
    reader = TokenReader(resnet, [-1], apply_final_norm=True)
    with pytest.raises(ValueError, match="has no final norm"):
        reader(AutoModel.from_config(resnet).eval(), torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("probe, norm", [("aim", "token_norm"), ("dolg", "norm")])
def test_token_batch_norms_learn_their_statistics_from_real_tokens_only(probe, norm):
    torch.manual_seed(0)
    pooling = PROBE_KINDS[probe].pooling(32).train()
    tokens = torch.randn(2, 6, 32)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    tokens[~mask] = 1e3  # padding: were it counted, the running mean would be far off
    pooling(tokens, token_mask=mask)
    normalised = tokens[mask] if probe == "aim" else pooling.conv1(tokens[mask])
    expected = 0.1 * normalised.mean(dim=0)  # momentum 0.1 from a zero running mean
    torch.testing.assert_close(getattr(pooling, norm).running_mean, expected.detach())


# ---------------------------------------------------------------------------------------------------------------
# Video: space-time tokens of clips


@pytest.mark.parametrize("frame, row, column", [(1, 2, 3), (0, 0, 1)])
def test_space_time_tokens_lie_frame_after_frame(video_family, frame, row, column):
    """Changing the pixels of one tubelet changes exactly the embedding token at (frame, row, column) of the grid,
    frame after frame and row-major: the layout every video family is read in (TimeSformer reordered)."""
    backbone = tiny_backbone(video_family)
    reader = TokenReader(backbone.config, [0])
    clips = random_clips()
    tubelet = reader.family.video.tubelet(backbone.config)[0]
    changed = clips.clone()
    changed[:, frame * tubelet : (frame + 1) * tubelet, :, row * 8 : (row + 1) * 8, column * 8 : (column + 1) * 8] += 1
    with torch.no_grad():
        before, after = reader(backbone, clips), reader(backbone, changed)
    frames, rows, columns = before.grid_size
    assert (frames, rows, columns) == (4 // tubelet, 4, 4)
    moved = (after.tokens - before.tokens).abs().amax(dim=(0, 2)) > 1e-6
    assert moved.nonzero().flatten().tolist() == [(frame * rows + row) * columns + column]


def test_image_and_video_backbones_refuse_the_other_input(saved_backbone):
    images, clips = torch.randn(2, 3, 32, 32), random_clips()
    with pytest.raises(
        ValueError, match=r"'vit' is an image backbone, but it was given video clips .*\[B, T, 3, H, W\]"
    ):
        TokenReader(tiny_backbone_config("vit"), [-1])(tiny_backbone("vit"), clips)
    video = hep.AutoModelForEfficientProbing.from_backbone(saved_backbone("videomae"), num_labels=3, num_queries=4)
    with pytest.raises(ValueError, match=r"'videomae' is a video backbone: it reads clips \[B, T, 3, H, W\].*images"):
        video(pixel_values=images)
    siglip2 = hep.AutoModelForEfficientProbing.from_backbone(tiny_backbone("siglip2_vision_model"), num_labels=3)
    with pytest.raises(ValueError, match="is an image backbone, but it was given video clips"):
        siglip2(pixel_values=clips)


@pytest.mark.parametrize(
    "family, changed, match",
    [
        ("videomae", {"num_frames": 8}, "num_frames=4, but the backbone given has num_frames=8"),
        ("videomae", {"tubelet_size": 1}, "tubelet_size=2, but the backbone given has tubelet_size=1"),
        ("vivit", {"tubelet_size": (1, 8, 8)}, r"tubelet_size=\[2, 8, 8\], but the backbone given has"),
        ("vjepa2", {"crop_size": 48}, "crop_size=32, but the backbone given has crop_size=48"),
        ("timesformer", {"patch_size": 16}, "patch_size=8, but the backbone given has patch_size=16"),
    ],
)
def test_probe_only_video_probe_refuses_a_backbone_cutting_clips_otherwise(tmp_path, family, changed, match):
    model = hep.AutoModelForEfficientProbing.from_backbone(tiny_backbone(family), num_labels=3, num_queries=4)
    model.config.backbone_name_or_path = "some/video-backbone"
    model.save_pretrained(tmp_path / "probe")
    assert json.loads((tmp_path / "probe" / "config.json").read_text())["frames_per_clip"] == 4
    with pytest.raises(ValueError, match=match):
        hep.AutoModelForEfficientProbing.from_pretrained(tmp_path / "probe", backbone=tiny_backbone(family, **changed))
    reloaded = hep.AutoModelForEfficientProbing.from_pretrained(tmp_path / "probe", backbone=tiny_backbone(family))
    assert reloaded.config.frames_per_clip == 4


def test_frames_per_clip_is_recorded_and_checked():
    """V-JEPA 2 reads clips of any multiple of its tubelet: a probe records the length it reads and refuses others;
    the families with fixed temporal positions read their num_frames only; image backbones read no clips unless
    asked to read them frame by frame (tests/test_frame_by_frame.py)."""
    backbone = tiny_backbone("vjepa2")
    model = hep.AutoModelForEfficientProbing.from_backbone(backbone, num_labels=3, num_queries=4, frames_per_clip=8)
    assert model.config.frames_per_clip == 8 and model.config.clip_token_grid == (4, 4, 4)
    clips = random_clips(frames=8)
    with torch.no_grad():
        read = model.read_tokens(clips)
        assert read.grid_size == (4, 4, 4) and read.tokens.shape == (2, 64, 32)
        assert model.token_layout(read.tokens) == (0, (4, 4, 4))  # cached tokens get the clips' grid
        with pytest.raises(ValueError, match=r"reads clips of 8 frames \(config.frames_per_clip\).* 4 frames"):
            model(pixel_values=random_clips(frames=4))
    config = tiny_backbone_config("vjepa2")
    with pytest.raises(Exception, match="positive multiple of the tubelet \\(2 frames\\)"):
        hep.EfficientProbingConfig(backbone_config=config, num_queries=4, frames_per_clip=5)
    with pytest.raises(Exception, match="read clips of exactly their num_frames \\(4 frames here\\)"):
        hep.EfficientProbingConfig(backbone_config=tiny_backbone_config("videomae"), num_queries=4, frames_per_clip=8)
    with pytest.raises(Exception, match="frames of the clips an image backbone reads frame by frame .* got 0"):
        hep.EfficientProbingConfig(backbone_config=tiny_backbone_config("vit"), num_queries=4, frames_per_clip=0)
    assert (
        hep.EfficientProbingConfig(backbone_config=tiny_backbone_config("vit"), num_queries=4).frames_per_clip is None
    )


def test_vjepa2_is_read_as_its_eval_reads_it():
    """By default, the encoder's final-normed output (what V-JEPA 2's probes read), without running the predictor."""
    backbone = tiny_backbone("vjepa2")
    model = hep.AutoModelForEfficientProbing.from_backbone(backbone, num_labels=3, num_queries=4)
    clips = random_clips()
    with torch.no_grad():
        expected = backbone(pixel_values_videos=clips, skip_predictor=True).last_hidden_state

        def refuse(*_):
            raise AssertionError("the predictor ran")

        backbone.predictor.register_forward_pre_hook(refuse)
        torch.testing.assert_close(model.read_tokens(clips).tokens, expected, rtol=0, atol=0)


def test_video_backbones_refuse_clips_they_would_misread():
    with pytest.raises(ValueError, match=r"frames of 48x48 pixels, but it reads 32x32 \(its crop_size\)"):
        TokenReader(tiny_backbone_config("vjepa2"), [-1])(tiny_backbone("vjepa2"), random_clips(size=48))
    with pytest.raises(ValueError, match="6 frames, but it reads exactly 4 .its config's num_frames"):
        TokenReader(tiny_backbone_config("timesformer"), [-1])(tiny_backbone("timesformer"), random_clips(frames=6))


def test_a_missing_final_norm_is_an_error_not_raw_tokens():
    config = tiny_backbone_config("videomae", use_mean_pooling=True)  # VideoMAE then has no final LayerNorm
    with pytest.raises(ValueError, match="has no final norm .layernorm is None"):
        TokenReader(config, [-1], apply_final_norm=True)(tiny_backbone("videomae"), random_clips())
