"""The authors' release of trained EP heads (``billpsomas/efficient-probing-heads``), imported as probes of this library.

The official ``tools/export_ep_heads.py`` writes one folder per leaderboard row, ``<slug>/ep_head.pth`` (a
``{"state_dict", "meta"}`` dict that loads with ``torch.load(weights_only=True)``) and ``<slug>/config.json`` (the
``meta``), plus a ``manifest.json`` listing the heads and the rows it could not export. Each head's backbone is
looked up in `official.mapping`; a mapped head becomes a probe repository, the others are listed with the reason.

    hf-probe import-official --output_dir probes/ [--push_to_hub ORG]               # downloads the release
    hf-probe import-official RELEASE_DIR --output_dir probes/                      # or reads a local export
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from huggingface_hub import snapshot_download

from ..backbones import native_image_size
from ..hub.cards import ProbeCardInfo
from ..hub.push import push_probe_to_hub, save_probe_repository
from .conversion import build_official_probe, read_official_checkpoint
from .mapping import OfficialBackbone, imagenet_labels, mapping_table, official_backbone, official_image_processor

RELEASE_REPO = "billpsomas/efficient-probing-heads"
RELEASE_URL = f"https://huggingface.co/{RELEASE_REPO}"
OFFICIAL_CODE_URL = "https://github.com/billpsomas/efficient-probing"
MANIFEST = "manifest.json"
REPORT = "import_report.json"
IMAGENET = "ILSVRC/imagenet-1k"


def official_card_info(meta: dict, row: OfficialBackbone, slug: str):
    """The card of an imported head: the official figures in its ``model-index``, the release credited."""
    return ProbeCardInfo(
        dataset=IMAGENET,
        dataset_name="ImageNet-1k",
        dataset_split="validation",
        top1=float(meta["val_acc1_at_head_epoch"]),
        extra_results={
            "Top-1 Accuracy, best epoch of the run (official table_best_acc1)": float(meta["table_best_acc1"])
        },
        results_source=("the official EP release", RELEASE_URL),
        model_name=f"EP {row.name} ImageNet-1k (official release)",
        license="apache-2.0",
        tags=["efficient-probing-release", "imagenet-1k"],
        training={
            "trained by": f"the authors, with the official code ({OFFICIAL_CODE_URL})",
            "head epoch": meta.get("head_epoch"),
            "top-1 of this head (val_acc1_at_head_epoch)": meta.get("val_acc1_at_head_epoch"),
            "best top-1 of the run (table_best_acc1)": meta.get("table_best_acc1"),
            "official backbone": f"{meta.get('model')} ({meta.get('loader') or 'models_vit'}, "
            f"{meta.get('pretrain_tag') or meta.get('finetune')})",
            "official tokens": meta.get("cls_features"),
            "image size": meta.get("image_size"),
            "training log": meta.get("training_log"),
        },
        notes=[
            f"Imported from the authors' release [{RELEASE_REPO}]({RELEASE_URL}) (`{slug}/ep_head.pth`) with "
            "`hf-probe import-official`; trained by Psomas et al. with the official code. The weights are unchanged.",
            "The head is the one the official run saved, which may be its last epoch rather than its best: its own "
            "epoch and top-1 are `head epoch` and `val_acc1_at_head_epoch`, the run's best is `table_best_acc1`. "
            f"Official note: {meta.get('note')}",
            "The top-1 figures are the official ones, measured on ImageNet-1k val, the split the official runs also "
            "selected their best epoch on (so `table_best_acc1` is a best-over-epochs figure on the reported split).",
            f"Tokens: the official backbone `{meta.get('model')}` is read here as `{row.hub_id}` "
            f"({'[CLS] and patch tokens' if str(meta.get('cls_features')).endswith('_all') else 'patch tokens'}, "
            f"{row.token_settings}; checked equal to {row.tokens_checked_against} on the same random weights). "
            f"Images are prepared by the official evaluation transform ({row.transform}) at {row.image_size} px. "
            "The backbone keeps its own licence.",
        ],
    )


def resolve_release(release: str | os.PathLike, token: str | bool | None = None) -> Path:
    """A local release folder as it is, or a Hub repository holding one (``billpsomas/efficient-probing-heads``)
    downloaded to the cache (only the manifest and the heads' files)."""
    if os.path.exists(release) or not re.fullmatch(r"[\w.-]+/[\w.-]+", str(release)):
        return Path(release)
    return Path(
        snapshot_download(str(release), allow_patterns=[MANIFEST, "*/ep_head.pth", "*/config.json"], token=token)
    )


def read_manifest(release_dir: str | os.PathLike) -> dict:
    path = Path(release_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: point at the folder tools/export_ep_heads.py wrote (or a download of {RELEASE_REPO}), "
            "which holds manifest.json and one <slug>/ep_head.pth per head."
        )
    manifest = json.loads(path.read_text())
    if not isinstance(manifest, dict) or not isinstance(manifest.get("heads"), list):
        raise ValueError(f"{path} is not an official release manifest: it needs a 'heads' list.")
    return manifest


def import_official_release(
    release_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    hub_org: str | None = None,
    push_to_hub: bool = False,
    token: str | bool | None = None,
) -> dict:
    """Write one probe repository per mapped head of an official release; list the rest with the reason.

    Args:
        release_dir: the release folder (``manifest.json`` and ``<slug>/ep_head.pth``), or its Hub repository.
        output_dir: one sub-folder per imported head is written here, named after the head's slug.
        hub_org: user or organisation the probes are (to be) published under: the cards' snippets load
            ``<hub_org>/ep-<slug>``.
        push_to_hub: upload every imported probe to ``<hub_org>/ep-<slug>``.
        token: Hub token for reading backbones and pushing.

    Returns:
        ``{"imported": [...], "unmapped": [...], "missing": [...]}``, also written to ``output_dir/import_report.json``.
    """
    if push_to_hub and not hub_org:
        raise ValueError("Pushing needs the user or organisation to push to: give hub_org (--push_to_hub ORG).")
    release_dir, output_dir = resolve_release(release_dir, token), Path(output_dir)
    manifest = read_manifest(release_dir)
    report = {"imported": [], "unmapped": [], "missing": list(manifest.get("missing") or [])}
    for entry in manifest["heads"]:
        slug = Path(entry["file"]).parent.name
        state_dict, meta = read_official_checkpoint(release_dir / entry["file"])
        meta = {**entry, **meta}  # the file's own meta wins over the manifest's copy
        row = official_backbone(meta)
        described = {"slug": slug, "method": meta.get("method"), "arch": meta.get("arch")}
        if row is None or row.hub_id is None:
            reason = row.unmapped if row else "backbone not in the mapping table (model, loader, weights unknown)"
            report["unmapped"].append({**described, "reason": reason})
            continue
        if str(meta.get("cls_features")).endswith("_all") and row.all_tokens_unmapped:
            report["unmapped"].append({**described, "reason": row.all_tokens_unmapped})
            continue
        if meta["image_size"] != row.image_size:
            reason = f"the head was trained at {meta['image_size']} px, its tokens were checked at {row.image_size}"
            report["unmapped"].append({**described, "reason": reason})
            continue
        model = build_official_probe(
            state_dict, meta, row.hub_id, apply_final_norm=row.apply_final_norm, feature_layers=row.feature_layers
        )
        if model.token_reader.config.model_type != row.model_type:
            raise ValueError(
                f"{row.hub_id} is a {model.token_reader.config.model_type!r} backbone, but the mapping of {row.name} "
                f"was checked for {row.model_type!r}: the tokens are not known to match the official ones."
            )
        if model.config.num_labels == len(labels := imagenet_labels()):  # every head of the release: ImageNet-1k
            model.config.id2label, model.config.label2id = labels, {name: index for index, name in labels.items()}
        backbone_size = native_image_size(model.token_reader.config, model.backbone)
        if backbone_size != (meta["image_size"],) * 2:
            report["unmapped"].append(
                {
                    **described,
                    "reason": f"{row.hub_id} is built for {'x'.join(map(str, backbone_size))} px, the head for "
                    f"{meta['image_size']}",
                }
            )
            continue
        name = f"ep-{slug.replace('_', '-')}"
        repo_id = f"{hub_org}/{name}" if hub_org else name
        card_info, processor = (
            official_card_info(meta, row, slug),
            official_image_processor(row.image_size, row.transform),
        )
        folder = save_probe_repository(
            model, output_dir / slug, repo_id, card_info=card_info, image_processor=processor, token=token
        )
        imported = {**described, "backbone": row.hub_id, "directory": str(folder), "repo_id": repo_id}
        if push_to_hub:
            commit = push_probe_to_hub(
                model,
                repo_id,
                card_info=card_info,
                image_processor=processor,
                token=token,
                commit_message=f"Import {slug} from {RELEASE_REPO}",
            )
            imported["commit_url"] = commit.commit_url
        report["imported"].append(imported)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / REPORT).write_text(json.dumps(report, indent=1))
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description="Import the official release of EP heads as probe repositories (one per mapped head).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "release",
        nargs="?",
        default=RELEASE_REPO,
        help="the release: a folder with manifest.json and <slug>/ep_head.pth (the official export), or its Hub repo",
    )
    parser.add_argument("--output_dir", help="folder to write one probe repository per head into; required")
    parser.add_argument("--push_to_hub", metavar="ORG", default=None, help="also upload each probe to ORG/ep-<slug>")
    parser.add_argument(
        "--hub_org", default=None, help="user or organisation the cards' snippets name (None: the --push_to_hub ORG)"
    )
    parser.add_argument("--token", default=None, help="Hub token (None: HF_TOKEN or the saved login)")
    parser.add_argument("--show_mapping", action="store_true", help="print the mapping table and exit")
    args = parser.parse_args(argv)
    if args.show_mapping:
        print(mapping_table())
        return {}
    if not args.output_dir:
        parser.error("--output_dir is required: the folder to write the probe repositories into.")
    report = import_official_release(
        args.release,
        args.output_dir,
        hub_org=args.push_to_hub or args.hub_org,
        push_to_hub=args.push_to_hub is not None,
        token=args.token,
    )
    for item in report["imported"]:
        print(f"imported  {item['slug']:<20} {item['backbone']:<28} -> {item['directory']}")
    for item in report["unmapped"]:
        print(f"unmapped  {item['slug']:<20} {item['reason']}")
    for item in report["missing"]:
        print(f"missing   {item.get('method')} {item.get('arch')}: {item.get('reason')}")
    print(
        f"{len(report['imported'])} imported, {len(report['unmapped'])} unmapped, {len(report['missing'])} missing "
        f"from the release; report in {Path(args.output_dir) / REPORT}"
    )
    return report


if __name__ == "__main__":
    main()
