"""Ready-made probes: found by backbone on the (loopback) Hub, the mapping's token settings checked against the official
timm and open_clip token paths (the release import: test_official_release.py), and the README's mapping table."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest
import timm
import torch
from cli_script import hf_probe
from huggingface_hub import HfApi, ModelCard
from PIL import Image
from test_hub import BACKBONE, CARD_INFO, push_backbone, trained_probe
from test_hub import local_hub as local_hub  # the loopback Hub fixture
from transformers import AutoConfig, ViTImageProcessor

from hf_efficient_probing import AutoModelForEfficientProbing
from hf_efficient_probing.backbones import apply_backbone_overrides, build_backbone, has_cls_token
from hf_efficient_probing.hub import ProbeCardInfo, find_probes, push_probe_to_hub
from hf_efficient_probing.official.mapping import (
    OFFICIAL_BACKBONES,
    TRANSFORMS,
    mapping_table,
    official_image_processor,
)

README = Path(__file__).resolve().parents[1] / "README.md"

# --------------------------------------------------------------------------------------------------------------
# find


def test_find_lists_the_probes_of_a_backbone_with_their_figures(local_hub, tmp_path):
    push_backbone()
    other_backbone = "tester/other-vit"
    run_dir = tmp_path / "run"  # a probe directory as `hf-probe train` leaves it, published with `hf-probe push`
    trained_probe().save_pretrained(run_dir)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(run_dir)
    (run_dir / "run_summary.json").write_text(json.dumps({"dataset": "tester/tiny-shapes", "eval_accuracy": 0.625}))
    assert "Pushed" in hf_probe("push", str(run_dir), "--repo_id", "tester/probe-good")
    push_probe_to_hub(trained_probe(), "tester/probe-better", card_info={**vars(CARD_INFO), "top1": 87.5})
    HfApi().create_repo("tester/not-a-probe")  # names the backbone but is no probe of this library
    ModelCard(f"---\nbase_model: {BACKBONE}\nlibrary_name: transformers\n---\n").push_to_hub("tester/not-a-probe")
    elsewhere = trained_probe()
    elsewhere.config.backbone_name_or_path = other_backbone
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    push_probe_to_hub(elsewhere, "tester/probe-elsewhere", card_info=CARD_INFO, image_processor=processor)

    found = find_probes(BACKBONE)
    assert [item.repo_id for item in found] == ["tester/probe-better", "tester/probe-good"], "best top-1 first"
    best = found[0]
    assert (best.probe, best.dataset, best.top1) == ("ep", "Tiny Shapes", 87.5)
    assert (found[1].dataset, found[1].top1) == ("tester/tiny-shapes", 62.5), "pushed with its run's results"
    assert best.parameters == sum(t.numel() for t in trained_probe().probe.state_dict().values())
    assert best.last_modified is not None
    assert [item.repo_id for item in find_probes(other_backbone)] == ["tester/probe-elsewhere"]

    card = ModelCard.load("tester/probe-good").data
    assert card.base_model == BACKBONE and card.base_model_relation == "adapter"

    listed = hf_probe("find", "--backbone", BACKBONE)
    rows = [line for line in listed.splitlines() if line.startswith("| tester/")]
    assert [row.split("|")[1].strip() for row in rows] == ["tester/probe-better", "tester/probe-good"]
    assert "| ep | Tiny Shapes | 87.50 |" in rows[0] and "| ep | tester/tiny-shapes | 62.50 |" in rows[1]


def test_a_probe_trained_under_seeds_is_published_with_its_intervals_and_spread(local_hub, tmp_path):
    """The model-index keeps the point value of the weights in the repository (the seed saved); the prose, the card's
    metadata and `find` carry the interval over evaluation images and the spread over seeds, each named."""
    push_backbone()
    run_dir = tmp_path / "run"
    trained_probe().save_pretrained(run_dir)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(run_dir)
    per_seed = {
        str(seed): {"eval_accuracy": top1, "eval_top5_accuracy": 1.0, "best_epoch": 3, "eval_accuracy_interval": [top1 - 0.1, top1 + 0.05]}
        for seed, top1 in ((0, 0.625), (1, 0.75), (2, 0.5))
    }  # fmt: skip
    chosen = {
        "eval_accuracy": 0.625, "eval_accuracy_std": 0.125, "eval_accuracy_seed_interval": [0.3145, 0.9355],
        "eval_accuracy_interval": [0.5, 0.7], "interval_method": "95 % percentile bootstrap over 8 evaluation images",
        "per_seed": per_seed, "saved_seed": 1, "best_epoch": [3, 3, 3], "learning_rate": 0.01,
    }  # fmt: skip
    summary = {"dataset": "tester/tiny-shapes", "protocol": "default", "seeds": [0, 1, 2], "chosen": {"ep": chosen}}
    (run_dir / "run_summary.json").write_text(json.dumps(summary))
    assert "Pushed" in hf_probe("push", str(run_dir), "--repo_id", "tester/probe-seeds")
    card = ModelCard.load("tester/probe-seeds")
    assert [r.metric_value for r in card.data.eval_results] == [75.0, 100.0], "seed 1's own figures"
    assert card.data.to_dict()["hf_efficient_probing"]["top1_interval"] == [65.0, 80.0]
    assert "| Top-1 Accuracy | 75.0 | 65.0 to 80.0 |" in card.text
    assert "95 % interval 65.0 to 80.0 (95 % percentile bootstrap over 8 evaluation images)" in card.text
    assert "top-1 62.50 ± 12.50 %" in card.text and "interval of the mean over seeds: 31.4 to 93.5" in card.text
    (found,) = find_probes(BACKBONE)
    assert (found.top1, found.top1_interval, found.top1_over_seeds) == (75.0, (65.0, 80.0), (62.5, 12.5, 3))
    listed = hf_probe("find", "--backbone", BACKBONE)
    assert "| 75.00 | 65.0 to 80.0 | 62.50 ± 12.50 (3 seeds) |" in listed


def test_find_refuses_a_path_for_a_backbone():
    with pytest.raises(ValueError, match="Hub id"):
        find_probes("./my-backbone")


# --------------------------------------------------------------------------------------------------------------
# The mapping: token equality with the official token path on the same random weights (the loaders that are pip
# packages, timm and open_clip, run live here; the others through recorded fixtures, test_official_backbones.py)

WIDTH, QUERIES = 32, 4

# Tiny random timm models of the timm rows' architectures: the tokens the probe reads are WIDTH wide.
TIMM_TINY_ARGS = {
    "eva02_large_patch14_224": dict(embed_dim=WIDTH, depth=2, num_heads=2),
    "vit_large_patch16_siglip_256": dict(embed_dim=WIDTH, depth=2, num_heads=2),
    **dict.fromkeys(
        ["hiera_base_224", "hiera_large_224", "hiera_huge_224"],
        dict(embed_dim=WIDTH // 8, num_heads=1, stages=(1, 1, 2, 1)),  # the width doubles at each of 4 stages
    ),
}


def tiny_timm_backbone(architecture: str, seed: int, image_size: int = 224):
    """A TimmWrapperModel of a timm architecture, shrunk (``TIMM_TINY_ARGS``), random weights."""
    config = AutoConfig.for_model(
        "timm_wrapper", architecture=architecture, model_args={**TIMM_TINY_ARGS[architecture], "img_size": image_size}
    )
    torch.manual_seed(seed)
    return build_backbone(config).eval()


def official_timm_tokens(timm_model, pixel_values: torch.Tensor, with_cls: bool) -> torch.Tensor:
    """The tokens the official timm loader hands an EP head, as models_more.TimmWrapper computes them (backbones.py
    builds it with ``num_prefix_tokens=getattr(model, "num_prefix_tokens", 0)``): ``forward_features`` laid out as
    ``[B, N, C]``, the patches after the prefix tokens, and for ``_all`` the prefix tokens' mean before them."""
    features = timm_model.forward_features(pixel_values)
    if features.ndim == 4:  # TimmWrapper._to_tokens: (B, C, H, W) when dim 1 is the widest, else (B, H, W, C)
        batch, a, c, d = features.shape
        features = features.flatten(2).transpose(1, 2) if a > d and c == d else features.reshape(batch, a * c, d)
    num_prefix = getattr(timm_model, "num_prefix_tokens", 0)
    patches = features[:, num_prefix:]
    if not with_cls:
        return patches
    if not num_prefix:
        raise ValueError("this backbone has no [CLS] token; '_all' poolings need one.")  # as TimmWrapper does
    return torch.cat([features[:, :num_prefix].mean(dim=1, keepdim=True), patches], dim=1)


TIMM_ROWS = [row for row in OFFICIAL_BACKBONES.values() if row.loader == "timm"]
OPEN_CLIP_ROWS = [row for row in OFFICIAL_BACKBONES.values() if row.loader == "openclip" and row.hub_id]


@pytest.mark.parametrize("row", TIMM_ROWS, ids=lambda row: row.model)
def test_timm_row_reads_the_official_timm_tokens(row):
    """The official timm loader ran ``timm.create_model(model, pretrained=True)``: the row names the Hub repository
    timm downloads those weights from, at their image size, and our TimmWrapperModel reader with the row's settings
    reads the tokens the official TimmWrapper handed the head (``ep``: patches; ``ep_all``: [CLS] first, or the
    same refusal when the model has no [CLS])."""
    assert row.model in timm.list_pretrained(), f"{row.model} is not a pretrained timm tag"
    pretrained = timm.models.get_pretrained_cfg(row.model)
    assert row.hub_id == pretrained.hf_hub_id and pretrained.input_size[1:] == (row.image_size,) * 2
    backbone = tiny_timm_backbone(row.model.split(".")[0], seed=0, image_size=row.image_size)
    pixel_values = torch.randn(2, 3, row.image_size, row.image_size, generator=torch.Generator().manual_seed(1))
    for official, selection in (("ep", "patch"), ("ep_all", "all")):
        settings = dict(token_selection=selection, apply_final_norm=row.apply_final_norm)
        settings["feature_layers"] = list(row.feature_layers)
        with torch.no_grad():
            try:
                want = official_timm_tokens(backbone.timm_model, pixel_values, with_cls=official == "ep_all")
            except ValueError:
                with pytest.raises(Exception, match=r"reads the \[CLS\] token, but 'timm_wrapper' backbones have none"):
                    AutoModelForEfficientProbing.from_backbone(backbone, probe="ep", num_labels=2, **settings)
                continue
            model = AutoModelForEfficientProbing.from_backbone(
                backbone, probe="ep", num_queries=QUERIES, num_labels=2, **settings
            )
            tokens = model.token_reader(backbone, pixel_values).tokens
        torch.testing.assert_close(tokens, want, rtol=1e-5, atol=1e-5, msg=f"{row.name}, {official}")


def open_clip_tower(row, quick_gelu: bool = False):
    """The row's open_clip vision tower, built by open_clip's own code from the model's config, shrunk: a timm tower's
    trunk through ``timm.create_model`` (open_clip calls it by name), a native VisionTransformer through its config."""
    import open_clip

    model_config = open_clip.get_model_config(row.model)
    vision = model_config["vision_cfg"]
    torch.manual_seed(0)
    if "timm_model_name" in vision:
        create = timm.create_model
        timm.create_model = functools.partial(create, embed_dim=WIDTH, depth=2, num_heads=2)
        try:
            tower = open_clip.model._build_vision_tower(model_config["embed_dim"], vision)
        finally:
            timm.create_model = create
        network = tower.trunk
    else:
        vision = {**vision, "width": WIDTH, "layers": 2, "head_width": WIDTH // 2}
        tower = network = open_clip.model._build_vision_tower(16, vision, quick_gelu=quick_gelu)
    with torch.no_grad():
        for name, parameter in network.named_parameters():  # make position and norm errors visible
            if "pos" in name:
                parameter.normal_(std=0.5)
            elif parameter.ndim == 1 and "norm" in name or name.startswith(("ln_", "norm")):
                parameter.add_(torch.randn_like(parameter) * 0.3)
    return tower.eval()


def open_clip_tokens(tower, pixel_values: torch.Tensor) -> torch.Tensor:
    """The tokens the official CLIPWrapper hands an ``ep`` head: every ``trunk.forward_features`` token for a timm
    tower, the unprojected patch tokens (after ``ln_post``) of a native VisionTransformer (``output_tokens=True``)."""
    if hasattr(tower, "trunk"):
        return tower.trunk.forward_features(pixel_values)
    tower.output_tokens = True
    return tower(pixel_values)[1]


def timm_backbone_for(row, tower, activation: str | None = None, project_tokens: bool = False):
    """A TimmWrapperModel of the row's timm architecture, shrunk as the tower, holding the tower's weights (open_clip
    keys converted by timm's own converter for a native tower), with the activation the probe pins; with
    ``project_tokens``, a TimmWrapperForImageClassification that keeps the visual projection as its ``head``."""
    from timm.models.vision_transformer import _convert_openai_clip

    architecture = row.hub_id.removeprefix("timm/").split(".")[0]
    config = AutoConfig.for_model(
        "timm_wrapper", architecture=architecture, model_args=dict(embed_dim=WIDTH, depth=2, num_heads=2)
    )
    apply_backbone_overrides(config, row.backbone_overrides(activation))
    if project_tokens:
        config.num_labels = tower.proj.shape[1]
    backbone = build_backbone(config, project_tokens).eval()
    if hasattr(tower, "trunk"):
        weights = tower.trunk.state_dict()
    else:
        weights = _convert_openai_clip({f"visual.{k}": v for k, v in tower.state_dict().items()}, backbone.timm_model)
    if not project_tokens:
        weights = {k: v for k, v in weights.items() if not k.startswith("head.")}
    missing, unexpected = backbone.timm_model.load_state_dict(weights, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return backbone


@pytest.mark.parametrize("row", OPEN_CLIP_ROWS, ids=lambda row: row.model)
def test_open_clip_row_reads_the_official_open_clip_tokens(row):
    """The official open_clip loader took ``create_model_and_transforms(model, pretrained=tag)`` (its ``.visual`` and
    its evaluation transform). The row's Hub repository is the one open_clip downloads the tag from (a native tower) or
    timm's of the tower's architecture, its transform gives open_clip's pixels, and our TimmWrapperModel reader, with
    the row's settings, gives the official tokens from the same random weights (the tower built by open_clip)."""
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    model_config, weights = open_clip.get_model_config(row.model), row.hub_id.removeprefix("timm/")
    vision = model_config["vision_cfg"]
    assert row.weights in open_clip.list_pretrained_tags_by_model(row.model) and vision["image_size"] == row.image_size
    pretrained = timm.models.get_pretrained_cfg(weights)
    assert row.hub_id == pretrained.hf_hub_id and pretrained.input_size[1:] == (row.image_size,) * 2
    tag = open_clip.get_pretrained_cfg(row.model, row.weights)
    if "timm_model_name" in vision:
        assert vision["timm_model_name"] == weights.split(".")[0], "timm's repository of the tower's architecture"
    else:
        assert tag["hf_hub"] == f"{row.hub_id}/", "the repository open_clip itself loads the tag from"

    preprocess = merge_preprocess_dict(PreprocessCfg(), tag)
    official_transform = image_transform_v2(PreprocessCfg(**{**preprocess, "size": vision["image_size"]}), False)
    image = Image.fromarray((torch.rand(240, 320, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy())
    pixel_values = official_transform(image)[None]
    ours = official_image_processor(row.image_size, row.transform)(image, return_tensors="pt")["pixel_values"]
    # transformers resizes with torchvision, open_clip with PIL: some pixels differ by one or two levels of 255 (under
    # 1% with bicubic, 2.2% with PE-Core's bilinear)
    difference = (ours - pixel_values).abs() * torch.tensor(tag["std"])[:, None, None] * 255  # in 8-bit levels
    assert ours.shape == pixel_values.shape and difference.max() < 2.01 and (difference > 0.01).float().mean() < 0.03

    tower = open_clip_tower(row)
    backbone = timm_backbone_for(row, tower)
    settings = dict(apply_final_norm=row.apply_final_norm, feature_layers=list(row.feature_layers))
    model = AutoModelForEfficientProbing.from_backbone(
        backbone, probe="ep", num_queries=QUERIES, num_labels=2, token_selection=row.ep_tokens, **settings
    )
    with torch.no_grad():
        want = open_clip_tokens(tower, pixel_values)
        tokens = model.token_reader(backbone, pixel_values).tokens
    torch.testing.assert_close(tokens, want, rtol=1e-5, atol=1e-5)
    if row.projected_all_tokens:  # CLIPWrapper's `_all`: [pooled; patches @ proj], the pooled token projected too
        tower.output_tokens = True
        with torch.no_grad():
            pooled, patches = tower(pixel_values)
            want = torch.cat([pooled[:, None], patches @ tower.proj], dim=1)
            projected = timm_backbone_for(row, tower, project_tokens=True)
            model = AutoModelForEfficientProbing.from_backbone(
                projected, probe="ep", num_queries=QUERIES, num_labels=2, token_selection="all", project_tokens=True,
                **settings,
            )  # fmt: skip
            torch.testing.assert_close(model.token_reader(projected, pixel_values).tokens, want, rtol=1e-5, atol=1e-5)
            assert model.config.token_width == tower.proj.shape[1]
    if row.all_tokens_unmapped and not has_cls_token(backbone.config):
        with pytest.raises(Exception, match=r"reads the \[CLS\] token, but 'timm_wrapper' backbones have none"):
            AutoModelForEfficientProbing.from_backbone(backbone, probe="ep", token_selection="all", **settings)


@pytest.mark.parametrize("row", [row for row in OPEN_CLIP_ROWS if row.activation], ids=lambda row: row.model)
def test_openai_clip_rows_pin_the_activation_and_the_other_is_one_flag_away(row):
    """open_clip's version decides whether an OpenAI tower runs GELU or QuickGELU: the probe pins the mapped one
    (GELU) and the import's ``activation="quick_gelu"`` gives the other; the two give different tokens."""
    pixel_values = torch.randn(1, 3, row.image_size, row.image_size, generator=torch.Generator().manual_seed(1))
    tokens = {}
    for quick_gelu in (False, True):
        tower = open_clip_tower(row, quick_gelu=quick_gelu)
        activation = "quick_gelu" if quick_gelu else None
        backbone = timm_backbone_for(row, tower, activation)
        model = AutoModelForEfficientProbing.from_backbone(
            backbone, probe="ep", num_queries=QUERIES, num_labels=2, apply_final_norm=row.apply_final_norm
        )
        with torch.no_grad():
            tokens[quick_gelu] = model.token_reader(backbone, pixel_values).tokens
            torch.testing.assert_close(tokens[quick_gelu], open_clip_tokens(tower, pixel_values), rtol=1e-5, atol=1e-5)
    assert row.backbone_overrides() == {"model_args": {"act_layer": "gelu"}}
    assert not torch.allclose(tokens[False], tokens[True], atol=1e-3), "the activation changes the tokens"


MAPPED_FAMILIES = {row.model_type for row in OFFICIAL_BACKBONES.values() if row.hub_id}


def test_every_row_is_mapped_with_its_family_or_says_why_not():
    tested = {"timm_wrapper", "ijepa", "dinov2", "dinov3_vit", "aimv2_vision_model"}
    assert MAPPED_FAMILIES <= tested, "a mapped family has no token-equality test"
    checked = {"", "hub", "dinov3", "aimv2", "timm", "openclip"}  # the loaders whose rows a test checks
    assert {row.loader for row in OFFICIAL_BACKBONES.values() if row.hub_id} <= checked
    for row in OFFICIAL_BACKBONES.values():
        if row.hub_id:
            assert row.image_size and row.feature_layers and row.weights_source and row.transform in TRANSFORMS, row
            assert row.model_type and row.apply_final_norm is not None and row.tokens_checked_against, row
            assert AutoConfig.for_model(row.model_type) is not None
            assert row.unmapped is None, row
        else:
            assert row.unmapped and not row.model_type, row
    slugs = [row.slug for row in OFFICIAL_BACKBONES.values()]
    assert len(slugs) == len(set(slugs)) == 37, "one row per leaderboard row of the official results.csv"


def test_readme_mapping_table_is_generated_from_the_code():
    block = re.search(
        r"<!-- OFFICIAL-MAPPING:START -->\n(.*?)\n<!-- OFFICIAL-MAPPING:END -->", README.read_text(), re.S
    )
    assert block is not None, "README lost the markers of the official-release mapping table"
    assert block.group(1) == mapping_table(), (
        "README's official-release mapping table is stale: paste the output of `hf-probe import-official --show_mapping`."
    )


def test_card_info_refuses_extra_results_without_a_data_set():
    with pytest.raises(ValueError, match="data set"):
        ProbeCardInfo(extra_results={"Top-1 Accuracy, best epoch": 80.0})
