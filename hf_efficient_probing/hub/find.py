"""Find ready-made probes for a backbone on the Hub.

The cards this library writes set ``library_name: hf-efficient-probing`` and ``base_model: <backbone>`` with
``base_model_relation: adapter``; the Hub turns these into the tags ``hf-efficient-probing``,
``base_model:<backbone>`` and ``base_model:adapter:<backbone>``, so one ``HfApi.list_models`` call filtered on two tags
lists the probes of a backbone, and the card data it returns holds the figures of each.

    hf-probe find --backbone facebook/dinov2-small
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import datetime

from huggingface_hub import HfApi

from .cards import LIBRARY_NAME

_EXPAND = ["cardData", "lastModified", "safetensors", "tags"]


@dataclass
class ProbeListing:
    """One probe repository found for a backbone.

    Attributes:
        repo_id: the repository (load it with ``AutoModelForEfficientProbing.from_pretrained(repo_id)``).
        probe: the probe kind (``ep``, ``linear``, ``aim``, ...), from the card's ``<kind>-probe`` tag.
        dataset: the data set of the card's results (or of its ``datasets`` list).
        top1: top-1 accuracy in percent, from the card's ``model-index``.
        top1_interval: its 95 % interval over the evaluation images (percent), from the card's
            ``hf_efficient_probing`` metadata; ``None`` for a card without one.
        top1_over_seeds: with ``--seeds``, ``(mean, std, number of seeds)`` of the probe's setting (percent).
        parameters: number of stored parameters (the probe's, for a probe-only repository).
        last_modified: time of the last commit.
    """

    repo_id: str
    probe: str | None
    dataset: str | None
    top1: float | None
    parameters: int | None
    last_modified: datetime | None
    top1_interval: tuple[float, float] | None = None
    top1_over_seeds: tuple[float, float, int] | None = None


def _listing(model) -> ProbeListing:
    card = model.card_data
    probe = next((tag.removesuffix("-probe") for tag in model.tags or [] if tag.endswith("-probe")), None)
    top1 = dataset = None
    for result in (card.eval_results if card else None) or []:
        if result.metric_name.split(" (")[0] == "Top-1 Accuracy" or (top1 is None and result.metric_type == "accuracy"):
            top1, dataset = result.metric_value, result.dataset_name or result.dataset_type
    if dataset is None and card and card.datasets:
        dataset = card.datasets[0]
    parameters = model.safetensors.total if model.safetensors else None
    spread = (card.to_dict().get("hf_efficient_probing") if card else None) or {}
    interval = tuple(spread["top1_interval"]) if spread.get("top1_interval") else None
    runs = spread.get("runs")
    over_seeds = (runs["top1_mean"], runs["top1_std"], len(runs["top1"])) if runs else None
    return ProbeListing(model.id, probe, dataset, top1, parameters, model.last_modified, interval, over_seeds)


def find_probes(backbone: str, *, token: str | bool | None = None, endpoint: str | None = None) -> list[ProbeListing]:
    """The probe repositories of this library whose card names ``backbone`` (a Hub id) as its base model.

    Args:
        backbone: Hub id of the backbone, e.g. ``"facebook/dinov2-small"``.
        token: Hub token (to see private probes); by default the one `huggingface_hub` finds.
        endpoint: Hub endpoint; by default ``HF_ENDPOINT`` or huggingface.co.

    Returns:
        The probes, best top-1 first (those without a figure last).
    """
    if not backbone or backbone.count("/") > 1 or backbone.startswith((".", "/", "~")):
        raise ValueError(f"find_probes needs the backbone's Hub id (e.g. 'facebook/dinov2-small'), got {backbone!r}.")
    api = HfApi(endpoint=endpoint, token=token)
    models = api.list_models(filter=[LIBRARY_NAME, f"base_model:{backbone}"], expand=_EXPAND)
    listings = [_listing(model) for model in models]
    return sorted(listings, key=lambda listing: (listing.top1 is None, -(listing.top1 or 0), listing.repo_id))


def format_listings(listings: list[ProbeListing]) -> str:
    """The listings as a Markdown table."""
    lines = [
        "| repository | probe | data set | top-1 | 95 % interval (evaluation images) | over seeds | parameters | "
        "last update |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for item in listings:
        top1 = f"{item.top1:.2f}" if item.top1 is not None else "-"
        interval = f"{item.top1_interval[0]:.1f} to {item.top1_interval[1]:.1f}" if item.top1_interval else "-"
        seeds = item.top1_over_seeds
        over_seeds = f"{seeds[0]:.2f} ± {seeds[1]:.2f} ({seeds[2]} seeds)" if seeds else "-"
        parameters = f"{item.parameters:,}" if item.parameters is not None else "-"
        updated = item.last_modified.strftime("%Y-%m-%d") if item.last_modified else "-"
        lines.append(
            f"| {item.repo_id} | {item.probe or '-'} | {item.dataset or '-'} | {top1} | {interval} | {over_seeds} | "
            f"{parameters} | {updated} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[ProbeListing]:
    parser = argparse.ArgumentParser(
        description="List the probes on the Hub for a backbone.", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--backbone", required=True, help="Hub id of the backbone, e.g. facebook/dinov2-small")
    parser.add_argument("--token", default=None, help="Hub token (None: HF_TOKEN or the saved login)")
    args = parser.parse_args(argv)
    listings = find_probes(args.backbone, token=args.token)
    if listings:
        print(format_listings(listings))
    else:
        print(f"No probes of {LIBRARY_NAME} found for {args.backbone}.")
    return listings


if __name__ == "__main__":
    main()
