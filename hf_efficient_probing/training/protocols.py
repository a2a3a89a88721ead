"""The protocols of a resolved job (`training.job.ProbingJob`): the default one (a grid chosen on held-out train
data, the evaluation split read once), the paper's (one probe through the live backbone, its best epoch chosen on
the evaluation split, which every output names as optimistic), and the k-NN evaluation of the frozen backbone.

Each reads the job and hands the engine (`training.engine`) what it trains on; none resolves anything again.
"""

from __future__ import annotations

import copy
import os

import torch
from torch.utils.data import Subset
from transformers import set_seed

from ..atomic import atomic_write_json
from ..backbones import TokenReader
from ..cache import ExtractionOptions, TokenCacheView
from ..cache.extraction import combined_report
from ..cache.features import GLOBAL_FEATURES, global_features
from ..evaluation.knn import best_knn_result, knn_classify, select_knn
from ..modeling_probing import AutoModelForEfficientProbing
from ..probes import linear_features
from .data import TRAIN, VALIDATION
from .engine import GridResult, GridSplits, RunOptions, train_grid, train_probe
from .figures import spread_figures
from .grid import ProbingGridModel
from .lora import add_lora
from .prepared import SELECTION, probing_collator
from .reporting import episodes_markdown, write_results, write_summary

GRID_SPLITS = (TRAIN, SELECTION, VALIDATION)
KNN_RESULTS = "knn_results.json"


def run_default_protocol(job) -> GridResult:
    """Train the job's grid (``--probe`` kinds x layers x learning rates) in one run, from the token cache unless
    the job trains live, and evaluate each kind's chosen probe once on the evaluation split."""
    grid, info = job.grid, job.run_info()
    if job.tokens.cached:
        caches = {split: _grid_cache(job, split, grid) for split in GRID_SPLITS}
        splits = GridSplits(*(job.data.cached_examples(cache, split) for split, cache in caches.items()))
        info.update(
            token_cache=combined_extraction_report(caches.values()),
            augmentation="none (cached tokens of the evaluation preprocessing"
            + ("; every evaluation clip of a training video is a sample)" if job.data.is_video else ")"),
        )
    else:
        train = job.data.images(TRAIN, job.data.train_transform(job.tokens.crop_scale))
        splits = GridSplits(train, job.data.images(SELECTION), job.data.images(VALIDATION))
        info["augmentation"] = f"RandomResizedCrop(scale={job.tokens.crop_scale}) + horizontal flip, live backbone"
        if job.data.is_video:
            info["augmentation"] += " (one crop and flip per clip, each clip drawn at a random start)"
    options = RunOptions(
        image_processor=job.data.eval_processor,
        run_info=info,
        run_identity=job.identity(),
        rungs=job.rungs,
        bootstrap=job.bootstrap,
    )
    return train_grid(grid, job.args, splits, options)


def run_episodes(job) -> dict:
    """Every low-shot episode's grid (`training.episodes`), trained and chosen on its own rows of the one token cache
    of their union (``output_dir/episode_<e>``); per kind the mean, spread and interval over episodes
    (``output_dir/all_results.json``, ``run_summary.{json,md}``)."""
    if not job.tokens.cached:
        raise ValueError("--episodes trains from the token cache (one backbone pass over every draw): drop "
                         "--use_token_cache false.")  # fmt: skip
    caches = [_grid_cache(job, split, job.grid) for split in (TRAIN, VALIDATION)]
    union, evaluation = (cache.dataset() for cache in caches)
    results = []
    for episode in job.episodes:
        args = copy.copy(job.args)
        args.output_dir = os.path.join(job.args.output_dir, f"episode_{episode.index}")
        record = job.data.info["episodes"][episode.index]
        info = {**job.run_info(), **record, "token_cache": combined_extraction_report(caches)}
        info["augmentation"] = "none (cached tokens of the evaluation preprocessing)"
        splits = GridSplits(*(Subset(union, rows) for rows in (episode.train_rows, episode.selection_rows)), evaluation)
        options = RunOptions(
            image_processor=job.data.eval_processor,
            run_info=info,
            run_identity={**job.identity(), "episode": record},
            rungs=job.rungs,
            bootstrap=job.bootstrap,
        )
        results.append(train_grid(job.episode_grid(episode), args, splits, options))
    summary = episodes_summary(job, results)
    if job.args.process_index == 0:
        kinds = summary["chosen"]
        write_results(job.args.output_dir, next(iter(kinds.values())) if len(kinds) == 1 else kinds)
        write_summary(summary, job.args.output_dir, markdown=episodes_markdown)
    return summary["chosen"]


def episodes_summary(job, results: list[GridResult]) -> dict:
    """The run summary of the episodes: per kind, `figures.spread_figures` over them, and each episode's choice."""
    seeds = [episode.seed for episode in job.episodes]
    chosen = {}
    for kind in results[0].metrics:
        per_episode = [{**result.metrics[kind], "chosen": result.summary["chosen"][kind]["name"]} for result in results]
        hits = [result.hits[kind] for result in results]
        chosen[kind] = spread_figures(seeds, per_episode, hits, job.bootstrap, over="episodes")
    return {
        "protocol": "default",
        "selection": "each episode: member (kind x layer x learning rate) and epoch chosen on its own selection split "
        "(see selection_rule); the evaluation split was read once per episode, by its chosen probe",
        "dataset": job.data.info.get("dataset"),
        "shots_per_class": job.data.info.get("shots_per_class"),
        "episodes": job.data.info["episodes"],
        "eval_samples": len(job.data.splits[VALIDATION]),
        "chosen": chosen,
    }


def extraction_options(cache_root: str | None, args, cache_per_node: bool = False) -> ExtractionOptions:
    """Where and how a run's caches are extracted (every process extracts its own slice, on its own device; with
    ``cache_per_node`` its slice of its node's cache)."""
    return ExtractionOptions(
        cache_root=cache_root,
        batch_size=args.per_device_eval_batch_size,
        device=args.device,
        cache_per_node=cache_per_node,
    )


def _grid_cache(job, split: str, grid: ProbingGridModel) -> TokenCacheView:
    return job.data.token_cache(
        split,
        grid.member_models[0],
        extraction_options(job.tokens.cache_root, job.args, job.tokens.cache_per_node),
        storage=(job.tokens.token_dtype, job.tokens.compute_dtype),
        reader=grid.reader,
    )


def combined_extraction_report(caches) -> dict:
    """One ``token_cache`` entry for the run summary from the caches' extraction reports."""
    return combined_report([cache.extraction_report for cache in caches])


def run_paper_protocol(job) -> dict:
    """The paper's protocol: one probe kind (per layer with ``--layerwise``) trained through the live backbone with
    augmentation, its best epoch chosen on the evaluation split (optimistic: every output says so)."""
    train_set = job.data.images(TRAIN, job.data.train_transform(job.tokens.crop_scale))
    eval_set = job.data.images(VALIDATION)
    (kind,) = job.kinds
    layerwise = job.probe_args.layerwise
    results = {}
    for layers in [[layer] for layer in job.layers] if layerwise else [list(job.layers)]:
        args = job.args
        if layerwise:
            args = copy.copy(job.args)
            args.output_dir = os.path.join(job.args.output_dir, f"layer_{layers[0]}")
        model = _paper_probe(job, kind, layers)
        options = RunOptions(
            image_processor=job.data.eval_processor,
            run_info=job.run_info(),
            run_identity={**job.identity(), "layers": layers},
            # the paper's protocol holds nothing out of train: a multi-label threshold is chosen on the training
            # images (evaluation preprocessing), never on the evaluation split
            threshold_dataset=job.data.images(TRAIN) if job.data.multi_label else None,
        )
        result = train_probe(model, args, train_set, eval_set, options)
        results[f"layer_{layers[0]}" if layerwise else "probe"] = result.metrics
    if layerwise and job.args.process_index == 0:
        atomic_write_json(os.path.join(job.args.output_dir, "layerwise_results.json"), results)
    return results if layerwise else results["probe"]


def _paper_probe(job, kind: str, layers: list[int]):
    set_seed(job.args.seed)  # the probe's initial weights
    lora = job.probe_args.lora_rank
    backbone = copy.deepcopy(job.backbone) if lora and job.probe_args.layerwise else job.backbone
    model = AutoModelForEfficientProbing.from_backbone(
        backbone,
        probe=kind,
        revision=job.revision,
        num_labels=job.data.num_labels,
        feature_layers=layers,
        **job.data.label_maps,
        **job.kinds[kind],
    )
    if lora:
        add_lora(model, lora, job.probe_args.lora_alpha, job.probe_args.lora_target_modules)
    return model


# ----------------------------------------------------------------------------------------------------------------
# k-NN of the frozen backbone

KNN_PAPER_SELECTION_NOTE = (
    "the paper's protocol: the sweep ran on the evaluation split and 'best' is its best (k, T), chosen on that split "
    "itself, so its accuracy is optimistic (the default protocol chooses (k, T) on data held out from train)"
)


def run_knn(job) -> dict:
    """k-NN of the frozen backbone's global features (train images with the evaluation transform, as officially).

    The default protocol uses the job's selection split (the probes' own), chooses ``(k, T)`` on it with the rest of
    train as the bank, and classifies the evaluation split once (`evaluation.knn.select_knn`); ``--protocol paper``
    sweeps on the evaluation split and reports the best pair, which the result names as optimistic. With the token
    cache the features are read from it (filled first if this backbone, layer and split were never cached)."""
    probe_args, paper = job.probe_args, job.protocol == "paper"
    splits = (TRAIN, VALIDATION) if paper else GRID_SPLITS
    features = {split: _knn_features(job, split) for split in splits}
    settings = {"num_classes": job.data.num_labels, "ks": probe_args.knn_k, "temperatures": probe_args.knn_temperatures}
    result = {"protocol": job.protocol, "features": probe_args.knn_features}
    if paper:
        sweep = knn_classify(*features[TRAIN], *features[VALIDATION], **settings)
        result.update(selection=KNN_PAPER_SELECTION_NOTE, sweep=sweep, best=best_knn_result(sweep))
    else:
        result.update(
            selection=(
                f"(k, T) chosen on the selection split ({job.data.info['selection_split']['fraction']} of every class "
                "of train, held out), with the rest of train as the bank; the evaluation split was classified once, "
                "with that choice"
            ),
            bank_samples=len(job.data.splits[TRAIN]),
            selection_samples=len(job.data.splits[SELECTION]),
            eval_samples=len(job.data.splits[VALIDATION]),
            **select_knn(features[TRAIN], features[SELECTION], features[VALIDATION], **settings),
        )
    if job.args.process_index == 0:
        os.makedirs(job.args.output_dir, exist_ok=True)
        atomic_write_json(os.path.join(job.args.output_dir, KNN_RESULTS), result)
    return result


def _knn_features(job, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    kind, layers = job.probe_args.knn_features, list(job.layers[-1:])
    if job.tokens.cached:
        reader = AutoModelForEfficientProbing.from_backbone(
            job.backbone, probe="linear", features=kind, num_labels=job.data.num_labels, feature_layers=layers
        )
        storage = (job.tokens.token_dtype, job.tokens.compute_dtype)
        return global_features(
            job.data.token_cache(
                split,
                reader,
                extraction_options(job.tokens.cache_root, job.args, job.tokens.cache_per_node),
                storage=storage,
            ),
            kind,
        )
    loader = torch.utils.data.DataLoader(
        job.data.images(split), batch_size=job.args.per_device_eval_batch_size, collate_fn=probing_collator
    )
    return live_global_features(job.backbone, loader, kind, layers)


@torch.no_grad()
def live_global_features(backbone, batches, features: str = "cls", feature_layers=(-1,), apply_final_norm=None):
    """``(features [N, D], labels [N])`` of the images in ``batches`` (dicts with ``pixel_values`` and ``labels``):
    the [CLS] token (``"cls"``) or the mean of the patch tokens (``"gap"``) of the frozen backbone."""
    if features not in GLOBAL_FEATURES:
        raise ValueError(f"k-NN features must be one of {GLOBAL_FEATURES}, got {features!r}.")
    reader = TokenReader(
        backbone.config, list(feature_layers), "all" if features == "cls" else "patch", apply_final_norm
    )
    backbone.eval()
    device = next(backbone.parameters()).device
    collected, labels = [], []
    for batch in batches:
        read = reader(backbone, batch["pixel_values"].to(device))
        collected.append(linear_features(read.tokens, features, read.num_prefix_tokens, read.mask).float().cpu())
        labels.append(batch["labels"].cpu())
    return torch.cat(collected), torch.cat(labels)
