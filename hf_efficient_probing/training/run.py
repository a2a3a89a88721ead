"""One probing job from parsed arguments: the backbone, its prepared data, the probe(s), training, k-NN (`hf-probe train`)."""

from __future__ import annotations

import copy
import dataclasses
import json
import os

from transformers import AutoImageProcessor, set_seed

from ..backbones import load_backbone, vision_config
from ..cache.features import global_features
from ..cache.key import normalize_layers
from ..configuration_probing import probe_config_class
from ..modeling_probing import AutoModelForEfficientProbing
from ..probes import PROBE_KINDS
from .arguments import DataArguments, ModelArguments, ProbeArguments, ProbingTrainingArguments
from .data import SELECTION, TRAIN, VALIDATION, PreparedData, prepare_data, probing_collator
from .grid import ProbingGridModel, grid_members
from .images import suited_crop_scale_min
from .knn import best_knn_result, extract_global_features, knn_classify, select_knn
from .lora import add_lora
from .recipe import DEFAULT_BASE_LEARNING_RATES, PROTOCOLS, default_feature_layers, scaled_grid
from .sweep import GridResult, grid_training_arguments, train_grid
from .trainer import train_probe


def load_backbone_and_processor(model_args: ModelArguments):
    """The frozen backbone ``model_args`` names (a Hub id or a local folder) and its image processor."""
    if model_args.model_name_or_path is None:
        raise ValueError(
            "No backbone: pass --model_name_or_path (a Hub id or a local folder). `hf-probe train` with no arguments "
            "at all runs the offline demo instead."
        )
    hub = {k: v for k, v in {"cache_dir": model_args.cache_dir, "token": model_args.token}.items() if v is not None}
    backbone = load_backbone(model_args.model_name_or_path, revision=model_args.model_revision, **hub)
    processor = AutoImageProcessor.from_pretrained(
        model_args.image_processor_name or model_args.model_name_or_path, revision=model_args.model_revision, **hub
    )
    return backbone, processor


def probe_config_kwargs(probe_args: ProbeArguments) -> dict[str, dict]:
    """Per probe kind of ``--probe``, the probe-config fields from the arguments that its config class has. A field
    that no kind has is an error (a typo, or a setting for a kind that is not trained)."""
    unknown_kinds = [kind for kind in probe_args.probe if kind not in PROBE_KINDS]
    if unknown_kinds or not probe_args.probe:
        raise ValueError(f"Unknown probe {unknown_kinds or probe_args.probe}; choose from {sorted(PROBE_KINDS)}.")
    given = json.loads(probe_args.probe_config_json) if probe_args.probe_config_json else {}
    for name, value in (
        ("num_queries", probe_args.num_queries),
        ("d_out", probe_args.d_out),
        ("features", probe_args.linear_features),
        ("token_selection", probe_args.token_selection),
    ):
        if value is not None:
            given[name] = value
    per_kind, used = {}, set()
    for kind in probe_args.probe:
        allowed = {f.name for f in dataclasses.fields(probe_config_class(kind))}
        per_kind[kind] = {name: value for name, value in given.items() if name in allowed}
        used |= set(per_kind[kind])
    unknown = sorted(set(given) - used)
    if unknown:
        fields = sorted(
            {f.name for kind in probe_args.probe for f in dataclasses.fields(probe_config_class(kind))}
            - {"backbone_config", "backbone_name_or_path", "backbone_revision"}
        )
        raise ValueError(f"The {probe_args.probe} probes have no settings {unknown}; their config fields are {fields}.")
    return per_kind


def run_probing(
    model_args: ModelArguments,
    data_args: DataArguments,
    probe_args: ProbeArguments,
    training_args: ProbingTrainingArguments,
    backbone_and_processor: tuple | None = None,
    data: PreparedData | None = None,
) -> dict:
    """Train (and k-NN-evaluate) as the arguments say. The default protocol returns the chosen probe's metrics (per
    kind when several kinds train); ``--protocol paper`` the final metrics, per layer when ``layerwise``.

    ``backbone_and_processor`` and ``data`` are what the job runs on when already loaded; by default the backbone
    ``model_args`` names and the data ``data_args`` names, prepared for its processor."""
    if probe_args.protocol not in PROTOCOLS:
        raise ValueError(f"Unknown --protocol {probe_args.protocol!r}; choose one of {PROTOCOLS}.")
    if isinstance(probe_args.probe, str):  # ProbeArguments(probe="ep") from Python
        probe_args = dataclasses.replace(probe_args, probe=[probe_args.probe])
    check_protocol_arguments(data_args, probe_args)
    backbone, processor = backbone_and_processor or load_backbone_and_processor(model_args)
    data = data or prepare_data(data_args, processor)
    revision = model_args.model_revision
    if probe_args.protocol == "paper":
        probe_args = dataclasses.replace(probe_args, feature_layers=probe_args.feature_layers or [-1])
        results = run_paper_protocol(backbone, data, data_args, probe_args, training_args, revision=revision)
    else:
        layers = probe_args.feature_layers or default_feature_layers(vision_config(backbone.config).num_hidden_layers)
        probe_args = dataclasses.replace(probe_args, feature_layers=layers)
        grid = run_default_protocol(backbone, data, data_args, probe_args, training_args, revision=revision)
        results = grid.metrics[probe_args.probe[0]] if len(grid.metrics) == 1 else dict(grid.metrics)
    if probe_args.knn_eval:
        use_cache = (
            data_args.use_token_cache if data_args.use_token_cache is not None else probe_args.protocol == "default"
        )
        knn = run_knn(backbone, data, data_args, probe_args, training_args, use_token_cache=use_cache)
        # one probe's metrics go under "probe"; per-layer or per-kind metrics keep their keys
        results = {"probe": results, "knn": knn} if "eval_accuracy" in results else {**results, "knn": knn}
    return results


def check_protocol_arguments(data_args: DataArguments, probe_args: ProbeArguments) -> None:
    """Arguments that the chosen protocol cannot honour fail here, before anything is loaded."""
    if probe_args.protocol == "paper":
        if data_args.use_token_cache:
            raise ValueError(
                "--protocol paper trains through the live backbone with RandomResizedCrop and flips on every epoch; "
                "the token cache stores one deterministic view per image, so it would drop that augmentation. "
                "Choose: drop --use_token_cache (the paper's protocol, exactly), or drop --protocol paper (the "
                "default protocol: cached tokens, a learning-rate grid chosen on held-out train data)."
            )
        if len(probe_args.probe) != 1:
            raise ValueError(f"--protocol paper trains one probe kind per run; got --probe {probe_args.probe}.")
        return
    if probe_args.lora_rank:
        raise ValueError(
            "--lora_rank trains the backbone, which the default protocol's grid of probes shares (their gradients "
            "would mix in it). Train LoRA with --protocol paper."
        )
    if probe_args.layerwise:
        raise ValueError(
            "--layerwise belongs to --protocol paper: the default protocol already trains every layer of "
            "--feature_layers as its own grid member and picks the best on the held-out split."
        )


def run_paper_protocol(
    backbone,
    data: PreparedData,
    data_args: DataArguments,
    probe_args: ProbeArguments,
    training_args: ProbingTrainingArguments,
    revision: str | None = None,
) -> dict:
    """The paper's protocol: one probe kind (per layer with ``--layerwise``) trained through the live backbone with
    augmentation, its best epoch chosen on the evaluation split (optimistic: the summary says so)."""
    crop_scale = (data_args.crop_scale_min if data_args.crop_scale_min is not None else PAPER_CROP_SCALE_MIN, 1.0)
    train_set = data.images(TRAIN, data.train_transform(crop_scale))
    eval_set = data.images(VALIDATION)
    kind = probe_args.probe[0]
    config_kwargs = probe_config_kwargs(probe_args)[kind]
    info = {**data.info, "protocol": "paper", "selection": PAPER_SELECTION_NOTE}
    layer_runs = (
        [[layer] for layer in probe_args.feature_layers] if probe_args.layerwise else [probe_args.feature_layers]
    )
    results = {}
    for layers in layer_runs:
        args = training_args
        if probe_args.layerwise:
            args = copy.copy(training_args)
            args.output_dir = os.path.join(training_args.output_dir, f"layer_{layers[0]}")
        set_seed(args.seed)  # the probe's initial weights
        run_backbone = copy.deepcopy(backbone) if probe_args.lora_rank and probe_args.layerwise else backbone
        model = AutoModelForEfficientProbing.from_backbone(
            run_backbone,
            probe=kind,
            revision=revision,
            num_labels=data.num_labels,
            feature_layers=list(layers),
            **data.label_maps,
            **config_kwargs,
        )
        if probe_args.lora_rank:
            add_lora(model, probe_args.lora_rank, probe_args.lora_alpha, probe_args.lora_target_modules)
        result = train_probe(model, args, train_set, eval_set, image_processor=data.image_processor, run_info=info)
        results[f"layer_{layers[0]}" if probe_args.layerwise else "probe"] = result.metrics
    if probe_args.layerwise and training_args.process_index == 0:
        with open(os.path.join(training_args.output_dir, "layerwise_results.json"), "w") as handle:
            json.dump(results, handle, indent=2)
    return results if probe_args.layerwise else results["probe"]


def combined_extraction_report(caches) -> dict:
    """One ``token_cache`` entry for the run summary from the caches' extraction reports (train and eval)."""
    reports = [cache.extraction_report for cache in caches]
    images, seconds = sum(r["images"] for r in reports), sum(r["seconds"] for r in reports)
    return {
        "images": images,
        "seconds": round(seconds, 3),
        "images_per_second": round(images / seconds, 2) if images and seconds else None,
        **{name: reports[0][name] for name in ("compute_dtype", "storage_dtype", "processes")},
        "reused": all(r["reused"] for r in reports),
    }


PAPER_CROP_SCALE_MIN = 0.08
PAPER_SELECTION_NOTE = (
    "the paper's protocol: the best epoch was chosen on the evaluation split itself, so the reported accuracy is "
    "optimistic (the default protocol chooses on data held out from train)"
)
GRID_SPLITS = (TRAIN, SELECTION, VALIDATION)


def with_selection_split(data: PreparedData, data_args: DataArguments) -> PreparedData:
    """``data`` with the default protocol's selection split held out of train: the same images for the probe grid
    and for k-NN, since both use this fraction and seed."""
    return data.hold_out_selection(data_args.selection_fraction, data_args.subset_seed)


def run_default_protocol(
    backbone,
    data: PreparedData,
    data_args: DataArguments,
    probe_args: ProbeArguments,
    training_args: ProbingTrainingArguments,
    revision: str | None = None,
) -> GridResult:
    """The default protocol: hold out ``data_args.selection_fraction`` of train (stratified, seeded), train the grid
    (``--probe`` kinds x ``--feature_layers`` x learning rates) in one run, from the token cache unless
    ``use_token_cache`` is off, and evaluate each kind's chosen probe once on the evaluation split."""
    data = with_selection_split(data, data_args)
    args = grid_training_arguments(training_args, len(data.splits[TRAIN]))
    effective_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    rates = scaled_grid(probe_args.learning_rates or DEFAULT_BASE_LEARNING_RATES, effective_batch)
    num_layers = vision_config(backbone.config).num_hidden_layers
    layers = [normalize_layers([layer], num_layers)[0] for layer in probe_args.feature_layers]
    members = grid_members(probe_args.probe, list(dict.fromkeys(layers)), rates)
    grid = ProbingGridModel.from_backbone(
        backbone,
        members,
        seed=args.seed,
        kind_kwargs=probe_config_kwargs(probe_args),
        revision=revision,
        num_labels=data.num_labels,
        **data.label_maps,
    )
    info = {
        **data.info,
        "protocol": "default",
        "train_samples": len(data.splits[TRAIN]),
        "selection_samples": len(data.splits[SELECTION]),
        "selection_fraction": data_args.selection_fraction,
    }
    if data_args.use_token_cache is None or data_args.use_token_cache:
        caches = [
            data.token_cache(
                split,
                grid.member_models[0],
                data_args.token_cache_dir,
                list(grid.layout.feature_layers),
                token_selection=grid.token_selection,
                batch_size=args.per_device_eval_batch_size,
                compute_dtype=data_args.backbone_dtype,
                device=args.device,
            )
            for split in GRID_SPLITS
        ]
        sets = [cache.dataset() for cache in caches]
        info["token_cache"] = combined_extraction_report(caches)
        info["augmentation"] = "none (cached tokens of the evaluation preprocessing)"
    else:
        lower = data_args.crop_scale_min or suited_crop_scale_min(
            data.splits[TRAIN], data.image_column, data.image_processor
        )
        crop_scale = (lower, 1.0)
        sets = [data.images(TRAIN, data.train_transform(crop_scale)), data.images(SELECTION), data.images(VALIDATION)]
        info["augmentation"] = f"RandomResizedCrop(scale={crop_scale}) + horizontal flip, live backbone"
    return train_grid(grid, args, *sets, image_processor=data.image_processor, run_info=info)


KNN_PAPER_SELECTION_NOTE = (
    "the paper's protocol: the sweep ran on the evaluation split and 'best' is its best (k, T), chosen on that split "
    "itself, so its accuracy is optimistic (the default protocol chooses (k, T) on data held out from train)"
)


def run_knn(
    backbone,
    data: PreparedData,
    data_args: DataArguments,
    probe_args: ProbeArguments,
    training_args: ProbingTrainingArguments,
    use_token_cache: bool = False,
) -> dict:
    """k-NN of the frozen backbone's global features (train images with the evaluation transform, as officially).

    The default protocol holds out the same selection split as its probe grid (``data_args.selection_fraction`` of
    train, ``data_args.subset_seed``), chooses ``(k, T)`` on it with the rest of train as the bank, and classifies
    the evaluation split once (`select_knn`); ``--protocol paper`` sweeps on the evaluation split and reports the
    best pair, which the result names as optimistic. With ``use_token_cache`` the features are read from the token
    cache, which is filled first if this backbone, layer and split were never cached."""
    import torch

    paper = probe_args.protocol == "paper"
    if not paper:
        data = with_selection_split(data, data_args)
    features = {}
    layers = probe_args.feature_layers[-1:]
    if use_token_cache:
        reader = AutoModelForEfficientProbing.from_backbone(
            backbone,
            probe="linear",
            features=probe_args.knn_features,
            num_labels=data.num_labels,
            feature_layers=layers,
        )
    for split in (TRAIN, VALIDATION) if paper else GRID_SPLITS:
        if use_token_cache:
            # every process extracts its own slice of the cache (the extraction synchronises the ranks itself)
            cache = data.token_cache(
                split,
                reader,
                data_args.token_cache_dir,
                layers,
                compute_dtype=data_args.backbone_dtype,
                device=training_args.device,
            )
            features[split] = global_features(cache, probe_args.knn_features)
            continue
        loader = torch.utils.data.DataLoader(
            data.images(split), batch_size=training_args.per_device_eval_batch_size, collate_fn=probing_collator
        )
        features[split] = extract_global_features(backbone, loader, probe_args.knn_features, layers)
    settings = {"num_classes": data.num_labels, "ks": probe_args.knn_k, "temperatures": probe_args.knn_temperatures}
    result = {"protocol": probe_args.protocol, "features": probe_args.knn_features}
    if paper:
        sweep = knn_classify(*features[TRAIN], *features[VALIDATION], **settings)
        result.update(selection=KNN_PAPER_SELECTION_NOTE, sweep=sweep, best=best_knn_result(sweep))
    else:
        result.update(
            selection=(
                f"(k, T) chosen on the selection split ({data_args.selection_fraction} of every class of train, "
                "held out), with the rest of train as the bank; the evaluation split was classified once, with "
                "that choice"
            ),
            bank_samples=len(data.splits[TRAIN]),
            selection_samples=len(data.splits[SELECTION]),
            eval_samples=len(data.splits[VALIDATION]),
            **select_knn(features[TRAIN], features[SELECTION], features[VALIDATION], **settings),
        )
    if training_args.process_index == 0:
        os.makedirs(training_args.output_dir, exist_ok=True)
        with open(os.path.join(training_args.output_dir, "knn_results.json"), "w") as handle:
            json.dump(result, handle, indent=2)
    return result
