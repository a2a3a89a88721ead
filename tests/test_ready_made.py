"""Ready-made probes: found by backbone on the (loopback) Hub, the official release imported as loadable probes, the
mapping's token settings checked against the official token path, and the README's mapping table."""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path

import pytest
import timm
import torch
from cli_script import hf_probe
from conftest import tiny_backbone_config
from huggingface_hub import HfApi, ModelCard
from PIL import Image
from test_hub import BACKBONE, CARD_INFO, push_backbone, trained_probe
from test_hub import local_hub as local_hub  # the loopback Hub fixture
from transformers import AutoConfig, AutoImageProcessor, ViTImageProcessor, pipeline

from hf_efficient_probing import AutoModelForEfficientProbing
from hf_efficient_probing.backbones import build_backbone
from hf_efficient_probing.hub import ProbeCardInfo, find_probes, push_probe_to_hub
from hf_efficient_probing.official.mapping import (
    IMAGENET_MEAN,
    OFFICIAL_BACKBONES,
    mapping_table,
    official_image_processor,
)
from hf_efficient_probing.official.release import RELEASE_REPO, import_official_release, resolve_release

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


def test_find_refuses_a_path_for_a_backbone():
    with pytest.raises(ValueError, match="Hub id"):
        find_probes("./my-backbone")


# --------------------------------------------------------------------------------------------------------------
# import-official

WIDTH, QUERIES, CLASSES, SIZE = 32, 4, 5, 224  # a head of the release has 1000 classes; some here have fewer


# Tiny random timm models of the timm rows' architectures: the tokens the probe reads are WIDTH wide.
TIMM_TINY_ARGS = {
    "eva02_large_patch14_224": dict(embed_dim=WIDTH, depth=2, num_heads=2),
    "vit_large_patch16_siglip_256": dict(embed_dim=WIDTH, depth=2, num_heads=2),
    **dict.fromkeys(
        ["hiera_base_224", "hiera_large_224", "hiera_huge_224"],
        dict(embed_dim=WIDTH // 8, num_heads=1, stages=(1, 1, 2, 1)),  # the width doubles at each of 4 stages
    ),
}


def tiny_timm_backbone(architecture: str, seed: int, image_size: int = SIZE):
    """A TimmWrapperModel of a timm architecture, shrunk (``TIMM_TINY_ARGS``), random weights."""
    config = AutoConfig.for_model(
        "timm_wrapper", architecture=architecture, model_args={**TIMM_TINY_ARGS[architecture], "img_size": image_size}
    )
    torch.manual_seed(seed)
    return build_backbone(config).eval()


def tiny_official_backbone(model_type: str, seed: int, image_size: int = SIZE):
    """A 2-layer, 32-wide backbone of the family (or a shrunk timm architecture) at the official 224 px."""
    if model_type in TIMM_TINY_ARGS:
        return tiny_timm_backbone(model_type, seed, image_size)
    torch.manual_seed(seed)
    return build_backbone(tiny_backbone_config(model_type, image_size=SIZE, patch_size=16)).eval()


def official_head(seed: int, classes: int) -> dict[str, torch.Tensor]:
    """An EP head in the official layout: Sequential(EfficientProbing, BatchNorm1d, Linear) keys."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "0.cls_token": torch.randn(1, QUERIES, WIDTH, generator=generator),
        "0.v.weight": torch.randn(WIDTH, WIDTH, generator=generator) / math.sqrt(WIDTH),
        "1.running_mean": torch.randn(WIDTH, generator=generator),
        "1.running_var": torch.rand(WIDTH, generator=generator) + 0.5,
        "1.num_batches_tracked": torch.tensor(1000),
        "2.weight": torch.randn(classes, WIDTH, generator=generator),
        "2.bias": torch.randn(classes, generator=generator),
    }


def official_ep_logits(state_dict: dict[str, torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
    """The official EP head, written out from its math: softmax(Q X^T / sqrt(D)) per query over the raw tokens,
    query m aggregating its contiguous slice of X W_V^T, then BatchNorm (eps 1e-6) and the classifier."""
    queries, value = state_dict["0.cls_token"][0], state_dict["0.v.weight"]
    attention = torch.softmax(queries @ tokens.transpose(1, 2) * WIDTH**-0.5, dim=-1)  # [B, M, N]
    values = (tokens @ value.T).unflatten(-1, (QUERIES, WIDTH // QUERIES))  # [B, N, M, s]
    pooled = torch.einsum("bmn,bnms->bms", attention, values).flatten(1)
    normed = (pooled - state_dict["1.running_mean"]) / torch.sqrt(state_dict["1.running_var"] + 1e-6)
    return normed @ state_dict["2.weight"].T + state_dict["2.bias"]


RELEASE_ROWS = {
    # slug: (meta identity, family (or timm architecture) of the tiny stand-in pushed under the row's Hub id)
    "mae_base": (
        {"method": "MAE", "arch": "ViT-B/16", "model": "vit_base_patch16", "loader": "", "pretrain_tag": "",
         "finetune": "vit_base_patch16_224.mae", "cls_features": "ep"},
        "vit_mae",
    ),
    "dino_vitb": (
        {"method": "DINO", "arch": "ViT-B/16", "model": "vit_base_patch16", "loader": "", "pretrain_tag": "",
         "finetune": "vit_base_patch16_224.dino", "cls_features": "ep_all"},
        "vit",
    ),
    "hiera_base": (
        {"method": "Hiera", "arch": "ViT-B/16", "model": "hiera_base_224.mae", "loader": "timm", "pretrain_tag": "",
         "finetune": "", "cls_features": "ep"},
        "hiera_base_224",
    ),
    "siglip_vitl": (
        {"method": "SigLIP", "arch": "ViT-L/16", "model": "ViT-L-16-SigLIP-256", "loader": "openclip",
         "pretrain_tag": "webli", "finetune": "", "cls_features": "ep", "image_size": 256},
        "vit_large_patch16_siglip_256",
    ),
    "siglip_vitl_all": (
        {"method": "SigLIP", "arch": "ViT-L/16", "model": "ViT-L-16-SigLIP-256", "loader": "openclip",
         "pretrain_tag": "webli", "finetune": "", "cls_features": "ep_all", "image_size": 256},
        None,
    ),
    "dinov2_vitb": (
        {"method": "DINOv2", "arch": "ViT-B/14", "model": "dinov2_vitb14", "loader": "hub", "pretrain_tag": "",
         "finetune": "", "cls_features": "ep"},
        None,
    ),
}  # fmt: skip


def write_release(folder: Path) -> dict[str, dict]:
    """A release in the format of the official tools/export_ep_heads.py: <slug>/ep_head.pth ({"state_dict", "meta"}),
    <slug>/config.json (the meta) and manifest.json (meta + params, file, size; and the rows not exported)."""
    manifest, metas = {"heads": [], "missing": []}, {}
    for seed, (slug, (identity, _)) in enumerate(RELEASE_ROWS.items()):
        meta = {
            "image_size": SIZE, **identity, "pretrain": "IN-1K", "extra_flags": "", "ep_queries": QUERIES, "d_out": 1,
            "head_epoch": 89 - seed, "val_acc1_at_head_epoch": 70.12 + seed, "table_best_acc1": 75.46 + seed,
            "note": "final-epoch head, not best-epoch: checkpoints overwrite per epoch.",
            "training_log": f"logs/{slug}/ep.txt",
        }  # fmt: skip
        state_dict = official_head(seed, classes=1000 if slug == "mae_base" else CLASSES)  # ImageNet-1k, or not
        (folder / slug).mkdir(parents=True)
        torch.save({"state_dict": state_dict, "meta": meta}, folder / slug / "ep_head.pth")
        (folder / slug / "config.json").write_text(json.dumps(meta, indent=1))
        size = round((folder / slug / "ep_head.pth").stat().st_size / 1e6, 1)
        params = sum(value.numel() for value in state_dict.values())
        manifest["heads"].append(
            {**meta, "params_incl_bn_stats": params, "file": f"{slug}/ep_head.pth", "size_mb": size}
        )
        metas[slug] = {"meta": meta, "state_dict": state_dict}
    manifest["missing"].append({"method": "DiT", "arch": "DiT-XL/2", "reason": "no surviving checkpoint"})
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return metas


def push_official_stand_ins() -> dict[str, torch.nn.Module]:
    """Tiny random backbones under the mapped rows' Hub ids (the loopback Hub serves them as the real ids)."""
    backbones = {}
    for seed, (slug, (identity, model_type)) in enumerate(RELEASE_ROWS.items()):
        if model_type is None:
            continue
        weights = identity["pretrain_tag"] or identity["finetune"]
        hub_id = OFFICIAL_BACKBONES[(identity["model"], identity["loader"], weights)].hub_id
        HfApi().create_repo(hub_id, exist_ok=True)
        backbones[slug] = tiny_official_backbone(
            model_type, seed=10 + seed, image_size=identity.get("image_size", SIZE)
        )
        backbones[slug].push_to_hub(hub_id)
    return backbones


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


def official_tokens(backbone, pixel_values: torch.Tensor, with_cls: bool, loader: str) -> torch.Tensor:
    """The tokens the official loader hands an EP head: for models_vit the last block's output before the final norm,
    patches only for ``ep``, [CLS] first for ``ep_all``; for timm, ``official_timm_tokens``; for an open_clip timm
    tower, every token of its trunk's ``forward_features`` (models_more.CLIPWrapper, ``ep``)."""
    if loader == "openclip":
        return backbone.timm_model.forward_features(pixel_values)
    if loader == "timm":
        return official_timm_tokens(backbone.timm_model, pixel_values, with_cls)
    kwargs = {}
    if backbone.config.model_type == "vit_mae":
        kwargs["noise"] = torch.arange(196.0).expand(len(pixel_values), -1)  # the identity patch order
    hidden = backbone(pixel_values=pixel_values, output_hidden_states=True, **kwargs).hidden_states[-1]
    return hidden if with_cls else hidden[:, 1:]


def test_import_official_release_round_trips_into_loadable_probes(local_hub, tmp_path):
    release = write_release(tmp_path / "release")
    HfApi().create_repo(RELEASE_REPO)  # the release as the authors published it, read by its Hub id (the default)
    HfApi().upload_folder(repo_id=RELEASE_REPO, folder_path=tmp_path / "release")
    backbones = push_official_stand_ins()
    output = tmp_path / "probes"
    printed = hf_probe("import-official", "--output_dir", str(output), "--push_to_hub", "tester")
    assert "4 imported, 2 unmapped, 1 missing" in printed

    report = json.loads((output / "import_report.json").read_text())
    assert [item["slug"] for item in report["imported"]] == ["mae_base", "dino_vitb", "hiera_base", "siglip_vitl"]
    unmapped = {item["slug"]: item["reason"] for item in report["unmapped"]}
    assert unmapped.keys() == {"siglip_vitl_all", "dinov2_vitb"} and "torch.hub" in unmapped["dinov2_vitb"]
    assert "attention-pooled (MAP) embedding" in unmapped["siglip_vitl_all"]
    assert report["missing"][0]["arch"] == "DiT-XL/2"
    assert not (output / "dinov2_vitb").exists(), "an unmapped head is listed, never guessed"

    image = Image.fromarray((torch.rand(240, 320, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy())
    for slug in ("mae_base", "dino_vitb", "hiera_base", "siglip_vitl"):
        official, identity = release[slug], RELEASE_ROWS[slug][0]
        processor = AutoImageProcessor.from_pretrained(output / slug)  # the official transform of the row
        settings = {key: processor.to_dict().get(key) for key in ("size", "image_mean", "crop_pct")}
        if identity["loader"] == "openclip":  # open_clip's SigLIP transform: squash, mean and std 0.5, no crop
            assert settings == {"size": {"height": 256, "width": 256}, "image_mean": (0.5,) * 3, "crop_pct": None}
        else:
            assert settings == {"size": {"shortest_edge": SIZE}, "image_mean": IMAGENET_MEAN, "crop_pct": 224 / 256}
        pixel_values = processor(image, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            tokens = official_tokens(
                backbones[slug], pixel_values, identity["cls_features"] == "ep_all", identity["loader"]
            )
            expected = official_ep_logits(official["state_dict"], tokens)
            for source in (output / slug, f"tester/ep-{slug.replace('_', '-')}"):  # written, and pushed
                model = AutoModelForEfficientProbing.from_pretrained(source)
                torch.testing.assert_close(model(pixel_values=pixel_values).logits, expected, rtol=1e-4, atol=1e-4)
        classifier = pipeline("image-classification", model=f"tester/ep-{slug.replace('_', '-')}")
        assert classifier(image, top_k=1)[0]["label"] == model.config.id2label[int(expected.argmax())]
        if slug == "mae_base":  # ImageNet-1k heads are labelled with the class names, in the official class order
            assert model.config.id2label[0] == "tench, Tinca tinca" and model.config.id2label[999].startswith("toilet")

        card = ModelCard.load(output / slug / "README.md")
        assert card.data.base_model == model.config.backbone_name_or_path and card.data.base_model_relation == "adapter"
        metrics = {result.metric_name: result.metric_value for result in card.data.eval_results}
        meta = official["meta"]
        assert metrics["Top-1 Accuracy"] == meta["val_acc1_at_head_epoch"]
        assert metrics["Top-1 Accuracy, best epoch of the run (official table_best_acc1)"] == meta["table_best_acc1"]
        assert {result.source_url for result in card.data.eval_results} == {
            "https://huggingface.co/billpsomas/efficient-probing-heads"
        }
        assert f"| head epoch | {meta['head_epoch']} |" in card.text and meta["note"] in card.text
        assert (
            "billpsomas/efficient-probing-heads" in card.text
            and "may be its last epoch rather than its best" in card.text
        )

    (found,) = find_probes("facebook/vit-mae-base")
    assert (found.repo_id, found.top1) == ("tester/ep-mae-base", release["mae_base"]["meta"]["val_acc1_at_head_epoch"])


def test_a_local_release_folder_is_read_in_place(tmp_path):
    assert resolve_release(tmp_path) == tmp_path
    assert resolve_release("not-a-folder/") == Path("not-a-folder/"), "a missing folder is not taken for a Hub id"


def test_import_refuses_a_folder_without_a_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="export_ep_heads.py"):
        import_official_release(tmp_path, tmp_path / "out")


# --------------------------------------------------------------------------------------------------------------
# The mapping: token equality with the official token path on the same random weights

TIMM_VIT_TO_HF = {
    "cls_token": "embeddings.cls_token",
    "pos_embed": "embeddings.position_embeddings",
    "patch_embed.proj.": "embeddings.patch_embeddings.projection.",
    "norm1.": "layernorm_before.",
    "attn.proj.": "attention.o_proj.",
    "norm2.": "layernorm_after.",
    "norm.": "layernorm.",
}


def timm_vit_to_hf(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ViT weights under transformers' ViT / ViT-MAE names (the fused qkv split into q, k, v projections)."""
    converted = {}
    for key, value in state_dict.items():
        block = re.match(r"blocks\.(\d+)\.(.*)", key)
        prefix, rest = (f"layers.{block[1]}.", block[2]) if block else ("", key)
        if rest.startswith("attn.qkv."):
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3), strict=True):
                converted[f"{prefix}attention.{name}.{rest.split('.')[-1]}"] = part
            continue
        for old, new in TIMM_VIT_TO_HF.items():
            if rest == old or (old.endswith(".") and rest.startswith(old)):
                rest = new + rest[len(old) :]
                break
        converted[prefix + rest] = value
    return converted


MAPPED_FAMILIES = {row.model_type for row in OFFICIAL_BACKBONES.values() if row.hub_id}


@pytest.mark.parametrize("model_type", sorted(MAPPED_FAMILIES - {"timm_wrapper"}))  # timm rows: the test below
def test_mapped_family_reads_the_official_tokens(model_type):
    """models_vit (the official default loader) runs timm's VisionTransformer blocks and hands the probe the last
    block's output before the final norm; the mapped transformers family, with the mapping's settings, must read the
    same tokens from the same weights."""
    assert model_type in ("vit", "vit_mae"), f"no token-equality check for {model_type!r}: write one or unmap the row"
    rows = [row for row in OFFICIAL_BACKBONES.values() if row.model_type == model_type]
    assert {row.tokens_checked_against for row in rows} == {"timm VisionTransformer blocks (the official models_vit)"}
    torch.manual_seed(0)
    reference = timm.models.vision_transformer.VisionTransformer(
        img_size=64, patch_size=16, embed_dim=WIDTH, depth=2, num_heads=4, num_classes=0
    ).eval()
    with torch.no_grad():
        reference.pos_embed.normal_(std=0.5)  # timm initialises it at 0.02 std: make position errors visible
    config = tiny_backbone_config(model_type, image_size=64, patch_size=16, intermediate_size=4 * WIDTH)
    backbone = build_backbone(config).eval()
    missing, unexpected = backbone.load_state_dict(timm_vit_to_hf(reference.state_dict()), strict=False)
    assert not unexpected and all(key.startswith("pooler.") for key in missing), (missing, unexpected)

    pixel_values = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference.blocks(reference.norm_pre(reference._pos_embed(reference.patch_embed(pixel_values))))
        for row in rows:
            for official, selection in (("ep", "patch"), ("ep_all", "all")):
                model = AutoModelForEfficientProbing.from_backbone(
                    backbone, probe="ep", num_queries=QUERIES, num_labels=2, token_selection=selection,
                    apply_final_norm=row.apply_final_norm,
                )  # fmt: skip
                tokens = model.token_reader(backbone, pixel_values).tokens
                want = expected if official == "ep_all" else expected[:, 1:]
                torch.testing.assert_close(tokens, want, rtol=1e-4, atol=1e-4, msg=f"{row.name}, {official}")


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


@pytest.mark.parametrize("row", OPEN_CLIP_ROWS, ids=lambda row: row.model)
def test_open_clip_row_reads_the_official_open_clip_tokens(row, monkeypatch):
    """The official open_clip loader took ``create_model_and_transforms(model, pretrained=tag).visual`` and, for a
    timm tower (open_clip's TimmModel), handed EP ``visual.trunk.forward_features(x)``, with open_clip's evaluation
    transform. The row's timm weights are that tower's architecture and tag, its transform gives open_clip's pixels,
    and our TimmWrapperModel reader, with the row's settings, gives the official tokens from the same random
    weights (the tower built by open_clip's own code, its timm architecture shrunk)."""
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    model_config, weights = open_clip.get_model_config(row.model), row.hub_id.removeprefix("timm/")
    vision = model_config["vision_cfg"]
    assert row.weights in open_clip.list_pretrained_tags_by_model(row.model)
    assert (vision["timm_model_name"], vision["image_size"]) == (weights.split(".")[0], row.image_size)
    pretrained = timm.models.get_pretrained_cfg(weights)
    assert row.hub_id == pretrained.hf_hub_id and pretrained.input_size[1:] == (row.image_size,) * 2
    assert ("SigLIP2" in row.model) == weights.endswith(".v2_webli"), "timm tags SigLIP2's WebLI release v2_webli"

    preprocess = merge_preprocess_dict(PreprocessCfg(), open_clip.get_pretrained_cfg(row.model, row.weights))
    official_transform = image_transform_v2(PreprocessCfg(**{**preprocess, "size": vision["image_size"]}), False)
    image = Image.fromarray((torch.rand(240, 320, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy())
    pixel_values = official_transform(image)[None]
    ours = official_image_processor(row.image_size, row.transform)(image, return_tensors="pt")["pixel_values"]
    # transformers resizes with torchvision, open_clip with PIL: a few pixels differ by one or two levels of 255
    difference = (ours - pixel_values).abs() * 0.5 * 255  # in levels of the 8-bit image
    assert ours.shape == pixel_values.shape and difference.max() < 2.01 and (difference > 0.01).float().mean() < 0.01

    tiny = dict(embed_dim=WIDTH, depth=2, num_heads=2)
    with monkeypatch.context() as patch:  # open_clip builds its trunk with timm.create_model(name, ...)
        patch.setattr(timm, "create_model", functools.partial(timm.create_model, **tiny))
        torch.manual_seed(0)
        tower = open_clip.model._build_vision_tower(model_config["embed_dim"], vision).eval()
    assert "timm" in type(tower).__module__, "CLIPWrapper reads a tower whose class lives in a timm module as timm"
    with torch.no_grad():
        tower.trunk.pos_embed.normal_(std=0.5)  # make position errors visible
    config = AutoConfig.for_model("timm_wrapper", architecture=vision["timm_model_name"], model_args=tiny)
    backbone = build_backbone(config).eval()
    backbone.timm_model.load_state_dict(tower.trunk.state_dict())
    settings = dict(apply_final_norm=row.apply_final_norm, feature_layers=list(row.feature_layers))
    model = AutoModelForEfficientProbing.from_backbone(
        backbone, probe="ep", num_queries=QUERIES, num_labels=2, **settings
    )
    with torch.no_grad():
        want = tower.trunk.forward_features(pixel_values)
        tokens = model.token_reader(backbone, pixel_values).tokens
    torch.testing.assert_close(tokens, want, rtol=1e-5, atol=1e-5)
    assert row.all_tokens_unmapped, "an ep_all head reads open_clip's pooled embedding, which our reader has not"
    with pytest.raises(Exception, match=r"reads the \[CLS\] token, but 'timm_wrapper' backbones have none"):
        AutoModelForEfficientProbing.from_backbone(backbone, probe="ep", token_selection="all", **settings)


def test_every_row_is_mapped_with_its_family_or_says_why_not():
    assert MAPPED_FAMILIES <= {"vit", "vit_mae", "timm_wrapper"}, "a mapped family has no token-equality test"
    checked = {"": "models_vit", "timm": "timm", "openclip": "open_clip"}  # the loaders whose rows a test checks
    assert {row.loader for row in OFFICIAL_BACKBONES.values() if row.hub_id} <= set(checked)
    for row in OFFICIAL_BACKBONES.values():
        if row.hub_id:
            assert row.image_size and row.feature_layers, row
            assert row.model_type and row.apply_final_norm is not None and row.tokens_checked_against, row
            assert AutoConfig.for_model(row.model_type) is not None
            assert row.unmapped is None, row
        else:
            assert row.unmapped and not row.model_type, row


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
