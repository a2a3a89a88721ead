"""The official release imported as probes: every mapped row of a synthetic release in the official export format
(tiny stand-ins of each row's architecture under the row's Hub id on the loopback Hub) loads with `from_pretrained`
and classifies through `pipeline`; the import is published as it is and found by backbone; a hostile manifest is
refused before anything is written; a failing head is reported, the others imported, and running again finishes."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from cli_script import hf_probe
from conftest import tiny_backbone_config
from huggingface_hub import HfApi, ModelCard
from PIL import Image
from test_hub import local_hub as local_hub  # the loopback Hub fixture
from transformers import AutoConfig, pipeline

from hf_efficient_probing import AutoModelForEfficientProbing, cli
from hf_efficient_probing.backbones import build_backbone
from hf_efficient_probing.hub import find_probes
from hf_efficient_probing.official import release as release_module
from hf_efficient_probing.official.mapping import OFFICIAL_BACKBONES, OfficialBackbone
from hf_efficient_probing.official.release import (
    OFFICIAL_HEAD,
    RELEASE_REPO,
    import_official_release,
    probe_name,
    release_heads,
    resolve_release,
)

WIDTH, QUERIES, CLASSES = 32, 4, 5  # a head of the release has 1000 classes; the tiny ones here have 5 (one has 1000)
# The heads the official runs trained with ep_all (results.csv, ep_variant); the others read ep.
EP_ALL = {"dino_vitb", "ibot_vitb", "ibot_vitl", "mocov3_vitb", "dinov2_vitl", "dinov3_vitb", "dinov3_vitl",
          "dinov3_vit7b", "clip_vitb16", "franca_laion"}  # fmt: skip
RELEASED = [row for row in OFFICIAL_BACKBONES.values() if row.slug != "dit_xl"]  # DiT has no head
# timm architectures shrunk to tokens WIDTH wide (Hiera doubles its width at each of 4 stages)
TIMM_TINY = {"hiera": dict(embed_dim=WIDTH // 8, num_heads=1, stages=(1, 1, 2, 1))}


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


def official_meta(row: OfficialBackbone, seed: int) -> dict:
    """A head's meta as tools/export_ep_heads.py writes it (identity, probe settings, provenance)."""
    method, _, arch = row.name.partition(" ")
    weights_field = "pretrain_tag" if row.loader == "openclip" else "finetune"
    return {
        "method": method, "arch": arch, "pretrain": "IN-1K", "image_size": row.image_size or 224,
        "model": row.model, "loader": row.loader, "pretrain_tag": "", "finetune": "", weights_field: row.weights,
        "extra_flags": "", "cls_features": "ep_all" if row.slug in EP_ALL else "ep", "ep_queries": QUERIES, "d_out": 1,
        "head_epoch": 89 - seed, "val_acc1_at_head_epoch": round(50 + seed * 0.7, 2),
        "table_best_acc1": round(51 + seed * 0.7, 2),
        "note": "final-epoch head, not best-epoch: checkpoints overwrite per epoch.",
        "training_log": f"logs/{row.slug}/ep.txt",
    }  # fmt: skip


def write_release(folder: Path, rows=RELEASED) -> dict[str, dict]:
    """A release in the format of the official tools/export_ep_heads.py: <slug>/ep_head.pth ({"state_dict", "meta"}),
    <slug>/config.json (the meta) and manifest.json (meta + params, file, size; and the rows not exported)."""
    manifest, heads = {"heads": [], "missing": []}, {}
    for seed, row in enumerate(rows):
        meta = official_meta(row, seed)
        state_dict = official_head(seed, classes=1000 if row.slug == "mae_base" else CLASSES)  # ImageNet-1k, or not
        (folder / row.slug).mkdir(parents=True)
        torch.save({"state_dict": state_dict, "meta": meta}, folder / row.slug / "ep_head.pth")
        (folder / row.slug / "config.json").write_text(json.dumps(meta, indent=1))
        size = round((folder / row.slug / "ep_head.pth").stat().st_size / 1e6, 1)
        params = sum(value.numel() for value in state_dict.values())
        manifest["heads"].append(
            {**meta, "params_incl_bn_stats": params, "file": f"{row.slug}/ep_head.pth", "size_mb": size}
        )
        heads[row.slug] = {"meta": meta, "state_dict": state_dict}
    manifest["missing"].append({"method": "DiT", "arch": "DiT-XL/2", "reason": "no surviving checkpoint"})
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return heads  # fmt: skip


def stand_in(row: OfficialBackbone, seed: int) -> torch.nn.Module:
    """A tiny random backbone of the row's Hub repository: its family (or timm architecture), tokens WIDTH wide, built
    for the size the repository's backbone is built for."""
    size = row.backbone_image_size or row.image_size
    torch.manual_seed(seed)
    if row.model_type == "timm_wrapper":
        architecture = row.hub_id.removeprefix("timm/").split(".")[0]
        tiny = TIMM_TINY.get(architecture.split("_")[0], dict(embed_dim=WIDTH, depth=2, num_heads=2))
        config = AutoConfig.for_model("timm_wrapper", architecture=architecture, model_args={**tiny, "img_size": size})
        config.num_labels = WIDTH  # a CLIP tower's projection (its timm head), kept by the heads that read through it
    else:
        patch = {"dinov3_vit": 16}.get(row.model_type, 14)
        extras = {"aimv2_vision_model": {"use_head": False}}.get(row.model_type, {})
        config = tiny_backbone_config(row.model_type, image_size=size, patch_size=patch, **extras)
    return build_backbone(config, project_tokens=row.project_tokens("ep_all" if row.slug in EP_ALL else "ep")).eval()


def mapped(row: OfficialBackbone) -> bool:
    return row.hub_id is not None and not (row.slug in EP_ALL and row.all_tokens_unmapped)


def push_stand_ins(rows=RELEASED) -> None:
    """Tiny random backbones under the mapped rows' Hub ids (the loopback Hub serves them as the real ids)."""
    for seed, row in enumerate(rows):
        if mapped(row):
            HfApi().create_repo(row.hub_id, exist_ok=True)
            stand_in(row, seed=100 + seed).push_to_hub(row.hub_id)


@pytest.mark.slow
def test_every_mapped_row_imports_loads_from_the_hub_and_classifies(local_hub, tmp_path, capsys):
    release = write_release(tmp_path / "release")
    HfApi().create_repo(RELEASE_REPO)  # the release as the authors published it, read by its Hub id (the default)
    HfApi().upload_folder(repo_id=RELEASE_REPO, folder_path=tmp_path / "release")
    push_stand_ins()
    output = tmp_path / "probes"
    release_module.main(["--output_dir", str(output), "--hub_org", "tester"])  # the default release: its Hub id
    assert "24 imported, 12 unmapped, 0 failed, 1 missing" in capsys.readouterr().out

    report = json.loads((output / "import_report.json").read_text())
    rows = {row.slug: row for row in RELEASED}
    imported = {item["slug"]: item for item in report["imported"]}
    assert sorted(imported) == sorted(slug for slug, row in rows.items() if mapped(row))
    assert sorted(slug for slug, item in imported.items() if item["verified"]) == sorted(
        slug for slug in imported if not rows[slug].unverified
    )
    assert len([item for item in imported.values() if item["verified"]]) == 18, "18 heads with a token test"
    unmapped = {item["slug"]: item["reason"] for item in report["unmapped"]}
    assert all(unmapped[slug] == (rows[slug].unmapped or rows[slug].all_tokens_unmapped) for slug in unmapped)
    assert report["failed"] == [] and report["missing"][0]["arch"] == "DiT-XL/2"
    assert not any((output / slug).exists() for slug in unmapped), "an unmapped head is listed, never guessed"
    index = (output / "README.md").read_text()
    assert all(f"`tester/{item['repo_id'].split('/')[1]}`" in index for item in imported.values())
    assert "unverified: run `hf-probe verify`" in index and "not in the release: no surviving checkpoint" in index

    cli.main(["push", str(output), "--repo_prefix", "tester"])
    assert "Pushed 24 probes" in capsys.readouterr().out
    image = Image.fromarray((torch.rand(240, 320, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy())
    for slug, item in imported.items():
        row, official = rows[slug], release[slug]
        classifier = pipeline("image-classification", model=item["repo_id"])  # the probe, then its backbone
        model, config = classifier.model, classifier.model.config
        cls_features = official["meta"]["cls_features"]  # the settings the token tests prove give the official tokens
        assert config.backbone_name_or_path == row.hub_id and config.backbone_overrides == row.backbone_overrides()
        assert (config.token_selection, config.apply_final_norm, config.feature_layers) == (
            row.token_selection(cls_features), row.apply_final_norm, list(row.feature_layers),
        )  # fmt: skip
        assert (config.interpolate_offset, config.project_tokens) == (
            row.interpolate_offset, row.project_tokens(cls_features),
        )  # fmt: skip
        pixel_values = classifier.image_processor(image, return_tensors="pt")["pixel_values"]  # the row's transform
        assert pixel_values.shape[-2:] == (row.image_size, row.image_size)
        with torch.no_grad():
            tokens = model.read_tokens(pixel_values).tokens
            logits = model(pixel_values=pixel_values).logits
        torch.testing.assert_close(logits, official_ep_logits(official["state_dict"], tokens), rtol=1e-4, atol=1e-4)
        assert classifier(image, top_k=1)[0]["label"] == config.id2label[int(logits.argmax())], slug

        card = ModelCard.load(item["repo_id"])
        assert card.data.base_model == row.hub_id and card.data.base_model_relation == "adapter"
        metrics = {result.metric_name: result.metric_value for result in card.data.eval_results}
        assert metrics["Top-1 Accuracy"] == official["meta"]["val_acc1_at_head_epoch"]
        assert ("unverified-backbone" in card.data.tags) == bool(row.unverified) == ("Unverified backbone" in card.text)
        recorded = json.loads(Path(output / slug / OFFICIAL_HEAD).read_text())["meta"]  # what verify compares with
        assert official["meta"].items() <= recorded.items()
    mae = AutoModelForEfficientProbing.from_pretrained("tester/ep-mae-base")  # ImageNet-1k heads: the class names
    assert mae.config.id2label[0] == "tench, Tinca tinca" and mae.config.id2label[999].startswith("toilet")
    for slug in ("mae_base", "dinov2_vitb", "clip_vitl"):
        found = {listing.repo_id: listing for listing in find_probes(rows[slug].hub_id)}
        assert found[imported[slug]["repo_id"]].top1 == release[slug]["meta"]["val_acc1_at_head_epoch"]  # fmt: skip


def test_the_conditional_rows_have_their_alternative_one_flag_away(local_hub, tmp_path):
    rows = [OFFICIAL_BACKBONES[key] for key in [("ViT-L-14", "openclip", "openai"),
                                                ("EVA02-E-14", "openclip", "laion2b_s4b_b115k")]]  # fmt: skip
    write_release(tmp_path / "release", rows)
    push_stand_ins(rows)
    other = "timm/eva02_enormous_patch14_clip_224.laion2b_plus"
    HfApi().create_repo(other)
    stand_in(rows[1], seed=7).push_to_hub(other)
    report = import_official_release(
        tmp_path / "release", tmp_path / "probes", activation="quick_gelu", backbones={"eva02_e14": other},
        hub_org="tester", push_to_hub=True,
    )  # fmt: skip
    assert len(report["pushed"]) == 2
    clip, eva = (AutoModelForEfficientProbing.from_pretrained(f"tester/{probe_name(row.slug)}") for row in rows)
    assert clip.config.backbone_overrides == {"model_args": {"act_layer": "quick_gelu"}}
    assert type(clip.backbone.timm_model.blocks[0].mlp.act).__name__ == "QuickGELU", "kept through from_pretrained"
    assert eva.config.backbone_name_or_path == other
    assert [item["verified"] for item in report["imported"]] == [False, False]
    assert "chosen with --backbone" in report["imported"][1]["unverified"]
    with pytest.raises(ValueError, match=r"--backbone names \['nope'\]"):
        import_official_release(tmp_path / "release", tmp_path / "other", backbones={"nope": other})


# --------------------------------------------------------------------------------------------------------------
# A safe, resumable import


def hostile_release(folder: Path, files: list[str]) -> None:
    """A release of one real head whose manifest lists ``files`` (each made to exist, wherever it points)."""
    row = OFFICIAL_BACKBONES[("vit_base_patch16", "", "vit_base_patch16_224.mae")]
    write_release(folder, [row])
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["heads"] = [{**manifest["heads"][0], "file": file} for file in files]
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "files, named",
    [
        (["a/../ep_head.pth"], "'a/../ep_head.pth' is not <slug>/<file>"),
        (["../ep_head.pth"], "'../ep_head.pth' is not <slug>/<file>"),
        (["../outside/ep_head.pth"], "'../outside/ep_head.pth' is not <slug>/<file>"),
        (["mae_base/../../outside/ep_head.pth"], "is not <slug>/<file>"),
        (["/tmp/outside/ep_head.pth"], "'/tmp/outside/ep_head.pth' is absolute"),
        (["mae_base/ep_head.pth", "mae_base/ep_head.pth"], "has the slug 'mae_base' of another entry"),
        (["linked/ep_head.pth"], "'linked/ep_head.pth' leads out of the release folder"),
    ],
)
def test_a_hostile_manifest_is_refused_and_nothing_is_written(tmp_path, files, named):
    outside = tmp_path / "outside"
    outside.mkdir()
    torch.save({"state_dict": {}, "meta": {}}, outside / "ep_head.pth")
    (outside / "model.safetensors").write_bytes(b"the user's own file")
    hostile_release(tmp_path / "release", files)
    (tmp_path / "release" / "linked").symlink_to(outside)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ValueError, match="Refusing the manifest") as refused:
        import_official_release(tmp_path / "release", tmp_path / "release" / "probes")
    assert named in str(refused.value)
    assert sorted(tmp_path.rglob("*")) == before, "nothing written, inside --output_dir or out of it"
    assert (outside / "model.safetensors").read_bytes() == b"the user's own file"


def test_the_command_refuses_a_hostile_manifest_with_the_reason(tmp_path):
    hostile_release(tmp_path / "release", ["a/../ep_head.pth"])
    printed = hf_probe("import-official", str(tmp_path / "release"), "--output_dir", str(tmp_path / "out"), check=False)
    assert "Refusing the manifest" in printed and "'a/../ep_head.pth'" in printed and "Traceback" not in printed
    assert not (tmp_path / "out").exists()


def test_release_heads_are_the_slugs_of_the_export():
    heads = release_heads({"heads": [{"file": "mae_base/ep_head.pth"}, {"file": "dino_vitb/ep_head.pth"}]}, Path("r"))
    assert {slug: file for slug, (file, _) in heads.items()} == {
        "mae_base": Path("r/mae_base/ep_head.pth"),
        "dino_vitb": Path("r/dino_vitb/ep_head.pth"),
    }


def test_a_failing_head_is_reported_the_others_imported_and_a_rerun_finishes(local_hub, tmp_path, monkeypatch, capsys):
    rows = [OFFICIAL_BACKBONES[key] for key in [("vit_base_patch16", "", "vit_base_patch16_224.mae"),
                                                ("hiera_base_224.mae", "timm", ""), ("dinov2_vitb14", "hub", "")]]  # fmt: skip
    release = tmp_path / "release"
    write_release(release, rows)
    push_stand_ins(rows[:1])  # hiera's and DINOv2's backbones are not on the Hub yet
    head = release / "hiera_base" / "ep_head.pth"
    head.write_bytes(head.read_bytes()[: head.stat().st_size // 2])  # a truncated download
    output = tmp_path / "probes"
    with pytest.raises(SystemExit) as exited:
        release_module.main([str(release), "--output_dir", str(output)])
    printed = capsys.readouterr().out
    assert exited.value.code == 1, "the command goes on past a failed head, then exits non-zero"
    assert "1 imported, 0 unmapped, 2 failed" in printed and "run the same command again" in printed
    report = json.loads((output / "import_report.json").read_text())
    failed = {item["slug"]: item["error"] for item in report["failed"]}
    assert "not a readable torch checkpoint" in failed["hiera_base"]
    assert "facebook/dinov2-base" in failed["dinov2_vitb"]
    assert sorted(path.name for path in output.iterdir()) == ["README.md", "import_report.json", "mae_base"]

    # a head whose writing is interrupted leaves nothing behind
    push_stand_ins(rows)
    (release / "hiera_base" / "ep_head.pth").unlink()
    write_release(tmp_path / "fresh", rows[1:2])
    os.replace(tmp_path / "fresh" / "hiera_base" / "ep_head.pth", release / "hiera_base" / "ep_head.pth")
    saved = release_module.save_probe_repository

    def interrupted(model, folder, *args, **kwargs):
        saved(model, folder, *args, **kwargs)
        if model.config.backbone_name_or_path == "facebook/dinov2-base":
            raise OSError("disk full")

    monkeypatch.setattr(release_module, "save_probe_repository", interrupted)
    report = import_official_release(release, output)
    assert [item["slug"] for item in report["failed"]] == ["dinov2_vitb"] and "disk full" in report["failed"][0][
        "error"
    ]
    assert not (output / "dinov2_vitb").exists() and not list(output.glob(".dinov2_vitb*")), "no half-written head"
    assert {item["slug"]: item.get("kept", False) for item in report["imported"]} == {
        "mae_base": True,
        "hiera_base": False,
    }

    monkeypatch.setattr(release_module, "save_probe_repository", saved)
    report = import_official_release(release, output)
    assert report["failed"] == [] and [item.get("kept", False) for item in report["imported"]] == [True, True, False]
    assert json.loads((output / "import_report.json").read_text()) == report


def test_push_refuses_an_import_written_for_another_organisation(tmp_path):
    (tmp_path / "import_report.json").write_text(json.dumps({"hub_org": None, "imported": []}))
    with pytest.raises(ValueError, match="written for None, not 'tester'"):
        release_module.push_release(tmp_path, "tester")


def test_a_local_release_folder_is_read_in_place(tmp_path):
    assert resolve_release(tmp_path) == tmp_path
    assert resolve_release("not-a-folder/") == Path("not-a-folder/"), "a missing folder is not taken for a Hub id"


def test_import_refuses_a_folder_without_a_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="export_ep_heads.py"):
        import_official_release(tmp_path, tmp_path / "out")
