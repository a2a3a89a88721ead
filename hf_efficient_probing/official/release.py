"""The authors' release of EP heads (``billpsomas/efficient-probing-heads``), imported as probes of this library.

The official ``tools/export_ep_heads.py`` writes one folder per leaderboard row, ``<slug>/ep_head.pth`` (a
``{"state_dict", "meta"}`` dict that loads with ``torch.load(weights_only=True)``) and ``<slug>/config.json`` (the
``meta``), plus a ``manifest.json`` listing the heads and the rows it could not export. Each head's backbone is
looked up in `official.mapping`; a mapped head becomes a probe repository in ``<output_dir>/<slug>``, the others are
listed with the reason; ``<output_dir>/README.md`` is the index of the release (a leaderboard) and
``<output_dir>/import_report.json`` says what was imported, left unmapped, or failed.

The manifest is not trusted: an entry whose file is absolute, leaves the release folder or is not
``<slug>/<file>``, or two entries with one slug, make the import refuse the manifest before anything is written.
Each head is written atomically (the folder appears whole or not at all); a head that fails (no network, a corrupt
file, a backbone of another family) is reported and the import goes on; a head already imported with the same
settings is kept, so that running the command again finishes an interrupted import.

    hf-probe import-official --output_dir probes/ --hub_org ORG           # downloads the release
    hf-probe import-official RELEASE_DIR --output_dir probes/             # or reads a local export
    hf-probe push probes/ --repo_prefix ORG                               # publishes every imported head
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path, PurePosixPath, PureWindowsPath

from huggingface_hub import HfApi, snapshot_download

from ..atomic import atomic_directory, atomic_write_bytes, atomic_write_json
from ..backbones import native_image_size
from ..hub.cards import ProbeCardInfo
from ..hub.push import save_probe_repository
from .conversion import build_official_probe, read_official_checkpoint
from .mapping import (
    TRANSFORMS,
    OfficialBackbone,
    imagenet_labels,
    mapping_table,
    official_backbone,
    official_image_processor,
)

RELEASE_REPO = "billpsomas/efficient-probing-heads"
RELEASE_URL = f"https://huggingface.co/{RELEASE_REPO}"
OFFICIAL_CODE_URL = "https://github.com/billpsomas/efficient-probing"
MANIFEST = "manifest.json"
REPORT = "import_report.json"
INDEX = "README.md"
OFFICIAL_HEAD = "official_head.json"  # in each imported probe: the official meta and how it was mapped
IMAGENET = "ILSVRC/imagenet-1k"
VERIFY = "unverified: run `hf-probe verify`"
_SLUG = re.compile(r"[A-Za-z0-9][\w.-]*")


def probe_name(slug: str) -> str:
    return f"ep-{slug.replace('_', '-')}"


def official_card_info(meta: dict, row: OfficialBackbone, slug: str, backbone: str, unverified: str | None):
    """The card of an imported head: the official figures in its ``model-index``, the release credited, and what is
    not verified about its backbone."""
    cls_features = str(meta.get("cls_features"))
    tokens = "[CLS] and patch tokens" if row.token_selection(cls_features) == "all" else "patch tokens"
    if row.project_tokens(cls_features):
        tokens += " through the visual projection"
    notes = [
        f"Imported from the authors' release [{RELEASE_REPO}]({RELEASE_URL}) (`{slug}/ep_head.pth`) with "
        "`hf-probe import-official`; trained by Psomas et al. with the official code. The weights are unchanged.",
        "The head is the one the official run saved, which may be its last epoch rather than its best: its own "
        "epoch and top-1 are `head epoch` and `val_acc1_at_head_epoch`, the run's best is `table_best_acc1`. "
        f"Official note: {meta.get('note')}",
        "The top-1 figures are the official ones, measured on ImageNet-1k val, the split the official runs also "
        "selected their best epoch on (so `table_best_acc1` is a best-over-epochs figure on the reported split).",
        f"Tokens: the official backbone `{meta.get('model')}` is read here as `{backbone}` ({tokens}, "
        f"{row.token_settings}; checked equal to {row.tokens_checked_against} on the same random weights). "
        f"Images are prepared by the official evaluation transform ({TRANSFORMS[row.transform].described}) at "
        f"{row.image_size} px. The backbone keeps its own licence.",
    ]
    if unverified:
        notes.append(
            f"**Unverified backbone**: {unverified}. Run `hf-probe verify <this repository> --data_dir <ImageNet "
            "images>`: it compares the head's BatchNorm statistics (and, on labelled val images, its top-1) with "
            "what this backbone gives."
        )
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
        tags=["efficient-probing-release", "imagenet-1k", *(["unverified-backbone"] if unverified else [])],
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
        notes=notes,
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


def release_heads(manifest: dict, release_dir: Path) -> dict[str, tuple[Path, dict]]:
    """``slug -> (file, manifest entry)`` for every head, each file ``<slug>/<name>`` inside the release folder.

    Refuses the manifest, naming every offending entry, when a file is absolute, leaves the folder (``..``, or a
    slug folder linking out), is not one folder deep, or when two entries share a slug (they would overwrite each
    other)."""
    root = release_dir.resolve()
    heads, problems = {}, []
    for index, entry in enumerate(manifest["heads"]):
        file = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(file, str):
            problems.append(f"entry {index} has no 'file'")
            continue
        parts = PurePosixPath(file).parts
        if PurePosixPath(file).is_absolute() or PureWindowsPath(file).is_absolute() or PureWindowsPath(file).drive:
            problems.append(f"{file!r} is absolute")
        elif len(parts) != 2 or not _SLUG.fullmatch(parts[0]) or "\\" in file:  # so no ".." either
            problems.append(f"{file!r} is not <slug>/<file> inside the release folder")
        elif not (release_dir / parts[0]).resolve().is_relative_to(root):  # the file itself may be a link, as the
            problems.append(f"{file!r} leads out of the release folder")  # Hub cache's snapshots link to blobs
        elif parts[0] in heads:
            problems.append(f"{file!r} has the slug {parts[0]!r} of another entry")
        else:
            heads[parts[0]] = (release_dir / file, entry)
    if problems:
        raise ValueError(
            f"Refusing the manifest of {release_dir}: {'; '.join(problems)}. An official export lists each head as "
            "<slug>/ep_head.pth, one slug per head."
        )
    return heads


def unmapped_reason(row: OfficialBackbone | None, meta: dict) -> str | None:
    """Why a head cannot be imported onto a Hub backbone, or ``None``."""
    if row is None:
        return "backbone not in the mapping table (model, loader, weights unknown)"
    if row.hub_id is None:
        return row.unmapped
    if str(meta.get("cls_features")).endswith("_all") and row.all_tokens_unmapped:
        return row.all_tokens_unmapped
    if meta.get("image_size") != row.image_size:
        return f"the head was trained at {meta.get('image_size')} px, its tokens were checked at {row.image_size}"
    return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def import_head(
    slug: str,
    file: Path,
    entry: dict,
    output_dir: Path,
    *,
    hub_org: str | None,
    activation: str | None,
    backbone: str | None,
    token: str | bool | None,
) -> dict:
    """Import one head; returns its report entry with ``"outcome"``: ``"imported"``, ``"kept"`` (imported before
    with the same settings) or ``"unmapped"``. Raises on a head that cannot be read or loaded."""
    state_dict, meta = read_official_checkpoint(file)
    meta = {**entry, **meta}  # the file's own meta wins over the manifest's copy
    row = official_backbone(meta)
    described = {"slug": slug, "method": meta.get("method"), "arch": meta.get("arch")}
    reason = unmapped_reason(row, meta)
    if reason:
        return {**described, "outcome": "unmapped", "reason": reason}
    backbone = backbone or row.hub_id
    unverified = row.unverified if backbone == row.hub_id else f"the backbone {backbone} was chosen with --backbone"
    repo_id = f"{hub_org}/{probe_name(slug)}" if hub_org else probe_name(slug)
    cls_features = str(meta.get("cls_features"))
    probe_settings = {  # the tokens the official loader handed the head, and the backbone pinned
        "token_selection": row.token_selection(cls_features),
        "project_tokens": row.project_tokens(cls_features),
        "apply_final_norm": row.apply_final_norm,
        "feature_layers": list(row.feature_layers),
        "interpolate_offset": row.interpolate_offset,
        "backbone_overrides": row.backbone_overrides(activation if row.activation else None),
    }
    settings = {"file_sha256": _sha256(file), "backbone": backbone, "repo_id": repo_id, "probe": probe_settings}
    imported = {**described, "backbone": backbone, "repo_id": repo_id, "verified": unverified is None}
    if unverified:
        imported["unverified"] = unverified
    folder = output_dir / slug
    if folder.is_symlink():
        raise ValueError(f"{folder} is a link; the import writes only real folders inside --output_dir.")
    recorded = folder / OFFICIAL_HEAD
    if recorded.is_file() and json.loads(recorded.read_text()).get("import") == settings:
        return {**imported, "outcome": "kept", "directory": str(folder)}

    model = build_official_probe(
        state_dict, meta, backbone, probe_settings=probe_settings, hub_kwargs={"token": token} if token else None
    )
    if model.token_reader.config.model_type != row.model_type:
        raise ValueError(
            f"{backbone} is a {model.token_reader.config.model_type!r} backbone, but the mapping of {row.name} was "
            f"checked for {row.model_type!r}: the tokens are not known to match the official ones."
        )
    built_for = native_image_size(model.token_reader.config, model.backbone)
    if built_for != ((row.backbone_image_size or row.image_size),) * 2:
        raise ValueError(
            f"{backbone} is built for {'x'.join(map(str, built_for))} px; the mapping of {row.name} reads a backbone "
            f"built for {row.backbone_image_size or row.image_size} px."
        )
    if model.config.num_labels == len(labels := imagenet_labels()):  # every head of the release: ImageNet-1k
        model.config.id2label, model.config.label2id = labels, {name: index for index, name in labels.items()}
    card_info = official_card_info(meta, row, slug, backbone, unverified)
    processor = official_image_processor(row.image_size, row.transform)
    if folder.exists():  # imported before with other settings: replaced whole
        shutil.rmtree(folder)
    with atomic_directory(folder) as staging:
        save_probe_repository(model, staging, repo_id, card_info=card_info, image_processor=processor, token=token)
        record = {"slug": slug, "row": row.name, "meta": meta, "import": settings, **imported}
        atomic_write_json(staging / OFFICIAL_HEAD, record)
    return {**imported, "outcome": "imported", "directory": str(folder)}


def index_card(manifest: dict, report: dict) -> str:
    """The release's index: one row per head (and per row the release lacks), with the official figure, the probe
    repository, and whether and how its backbone is checked."""
    by_slug = {item["slug"]: item for key in ("imported", "unmapped", "failed") for item in report[key]}
    lines = [
        "# EP heads of the official release, as probes of hf-efficient-probing",
        "",
        f"Imported from [{RELEASE_REPO}]({RELEASE_URL}) with `hf-probe import-official`. Top-1: the official "
        "`val_acc1_at_head_epoch` of each head (ImageNet-1k val), and the run's best (`table_best_acc1`, the "
        "leaderboard figure, selected on the same split).",
        "",
        "| row | backbone | probe | official top-1 (run's best) | mapped | verified |",
        "|---|---|---|---|---|---|",
    ]
    for entry in manifest["heads"]:
        slug = PurePosixPath(entry["file"]).parts[0]
        item = by_slug.get(slug, {})
        top1 = f"{entry.get('val_acc1_at_head_epoch')} ({entry.get('table_best_acc1')})"
        backbone = f"[`{item['backbone']}`](https://huggingface.co/{item['backbone']})" if "backbone" in item else "-"
        if "repo_id" in item:
            probe, mapped = f"`{item['repo_id']}`", "yes"
            verified = "token test" if item["verified"] else f"{VERIFY} ({item['unverified']})"
        elif "reason" in item:
            probe, mapped, verified = "-", f"no: {item['reason']}", "-"
        else:
            probe, mapped, verified = "-", f"failed: {item.get('error')}", "-"
        lines.append(
            f"| {entry.get('method')} {entry.get('arch')} | {backbone} | {probe} | {top1} | {mapped} | {verified} |"
        )
    for item in report["missing"]:
        lines.append(
            f"| {item.get('method')} {item.get('arch')} | - | - | - | not in the release: {item.get('reason')} | - |"
        )
    return "\n".join(lines) + "\n"  # fmt: skip


def import_official_release(
    release_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    hub_org: str | None = None,
    push_to_hub: bool = False,
    token: str | bool | None = None,
    activation: str | None = None,
    backbones: dict[str, str] | None = None,
) -> dict:
    """Write one probe repository per mapped head of an official release; list the rest with the reason.

    Args:
        release_dir: the release folder (``manifest.json`` and ``<slug>/ep_head.pth``), or its Hub repository.
        output_dir: one sub-folder per imported head is written here, named after the head's slug, with the index
            card (``README.md``) and ``import_report.json``.
        hub_org: user or organisation the probes are (to be) published under: the cards' snippets load
            ``<hub_org>/ep-<slug>``.
        push_to_hub: upload every imported probe to ``<hub_org>/ep-<slug>`` (`push_release`).
        token: Hub token for reading backbones and pushing.
        activation: the MLP activation of open_clip's OpenAI CLIP rows (``"gelu"``, mapped, or ``"quick_gelu"``).
        backbones: ``slug -> Hub id``: another backbone for a head (e.g. the other EVA02-CLIP repository); such a
            head is marked unverified.

    Returns:
        ``{"imported": [...], "unmapped": [...], "failed": [...], "missing": [...]}``, also written to
        ``output_dir/import_report.json``. Heads kept from an earlier run are among ``imported`` (``"kept": true``).
    """
    if push_to_hub and not hub_org:
        raise ValueError("Pushing needs the user or organisation to push to: give hub_org (--push_to_hub ORG).")
    release_dir, output_dir = resolve_release(release_dir, token), Path(output_dir)
    manifest = read_manifest(release_dir)
    heads = release_heads(manifest, release_dir)
    unknown = sorted(set(backbones or {}) - set(heads))
    if unknown:
        raise ValueError(f"--backbone names {unknown}, which are not heads of this release: {sorted(heads)}.")
    report = {
        "hub_org": hub_org,
        "imported": [],
        "unmapped": [],
        "failed": [],
        "missing": list(manifest.get("missing") or []),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    for slug, (file, entry) in heads.items():
        try:
            item = import_head(
                slug, file, entry, output_dir, hub_org=hub_org, activation=activation,
                backbone=(backbones or {}).get(slug), token=token,
            )  # fmt: skip
        except Exception as error:  # the network, a corrupt file, an unexpected backbone: reported, the rest goes on
            report["failed"].append({"slug": slug, "method": entry.get("method"), "arch": entry.get("arch"),
                                     "error": f"{type(error).__name__}: {error}"})  # fmt: skip
            continue
        outcome = item.pop("outcome")
        report["unmapped" if outcome == "unmapped" else "imported"].append(
            {**item, **({"kept": True} if outcome == "kept" else {})}
        )
    atomic_write_bytes(output_dir / INDEX, index_card(manifest, report).encode())
    atomic_write_json(output_dir / REPORT, report)
    if push_to_hub:
        report["pushed"] = push_release(output_dir, hub_org, token=token)
    return report  # fmt: skip


def push_release(
    output_dir: str | os.PathLike, repo_prefix: str, *, token: str | bool | None = None, private: bool | None = None
) -> list[str]:
    """Publish every head an import wrote to ``output_dir``, each folder as it is, to ``<repo_prefix>/ep-<slug>``
    (its card names that repository, the backbone as ``base_model``, ``base_model_relation: adapter``). Returns the
    commit URLs."""
    output_dir = Path(output_dir)
    report_path = output_dir / REPORT
    if not report_path.is_file():
        raise FileNotFoundError(
            f"{report_path} not found: {output_dir} is not a folder hf-probe import-official wrote."
        )
    report = json.loads(report_path.read_text())
    if report.get("hub_org") != repo_prefix:
        raise ValueError(
            f"The cards in {output_dir} were written for {report.get('hub_org')!r}, not {repo_prefix!r}: run "
            f"`hf-probe import-official ... --output_dir {output_dir} --hub_org {repo_prefix}` first (the heads are "
            "re-written with cards for that organisation)."
        )
    api = HfApi(token=token)
    commits = []
    for item in report["imported"]:
        folder = output_dir / item["slug"]
        repo_id = api.create_repo(item["repo_id"], private=private, exist_ok=True).repo_id
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=folder, commit_message=f"Import {item['slug']} from {RELEASE_REPO}"
        )
        commits.append(commit.commit_url)
    return commits


def _backbone_choice(text: str) -> tuple[str, str]:
    slug, separator, repo = text.partition("=")
    if not separator or not slug or not repo:
        raise argparse.ArgumentTypeError(f"expected SLUG=HUB_ID (e.g. eva02_e14=timm/...), got {text!r}")
    return slug, repo


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
    parser.add_argument(
        "--clip_activation",
        choices=["gelu", "quick_gelu"],
        default=None,
        help="MLP activation of open_clip's OpenAI CLIP rows (None: the mapping's, GELU; see the mapping table)",
    )
    parser.add_argument(
        "--backbone",
        type=_backbone_choice,
        action="append",
        default=[],
        metavar="SLUG=HUB_ID",
        help="read the head SLUG on another Hub backbone (e.g. the other repository of an unverified row)",
    )
    parser.add_argument("--token", default=None, help="Hub token (None: HF_TOKEN or the saved login)")
    parser.add_argument("--show_mapping", action="store_true", help="print the mapping table and exit")
    args = parser.parse_args(argv)
    if args.show_mapping:
        print(mapping_table())
        return {}
    if not args.output_dir:
        parser.error("--output_dir is required: the folder to write the probe repositories into.")
    try:
        report = import_official_release(
            args.release,
            args.output_dir,
            hub_org=args.push_to_hub or args.hub_org,
            push_to_hub=args.push_to_hub is not None,
            token=args.token,
            activation=args.clip_activation,
            backbones=dict(args.backbone),
        )
    except (FileNotFoundError, ValueError) as error:  # no release there, or a manifest refused: nothing was written
        parser.exit(2, f"{parser.prog}: {error}\n")
    for item in report["imported"]:
        status = "" if item["verified"] else f"  ({VERIFY})"
        print(f"{'kept' if item.get('kept') else 'imported':<9} {item['slug']:<20} {item['backbone']:<44}{status}")
    for item in report["unmapped"]:
        print(f"unmapped  {item['slug']:<20} {item['reason']}")
    for item in report["failed"]:
        print(f"FAILED    {item['slug']:<20} {item['error']}")
    for item in report["missing"]:
        print(f"missing   {item.get('method')} {item.get('arch')}: {item.get('reason')}")
    print(
        f"{len(report['imported'])} imported, {len(report['unmapped'])} unmapped, {len(report['failed'])} failed, "
        f"{len(report['missing'])} missing from the release; index in {Path(args.output_dir) / INDEX}, report in "
        f"{Path(args.output_dir) / REPORT}"
    )
    if report["failed"]:
        print("Some heads failed: fix the cause and run the same command again (imported heads are kept).")
        sys.exit(1)
    return report


if __name__ == "__main__":
    main()
