"""A Figure-2-style sweep on one frozen backbone: many probes trained together, one table of probe, params, top-1.

    hf-probe sweep                  # offline: the embedded backbone and data set, a minute on CPU
    hf-probe sweep --model_name_or_path facebook/vit-mae-base --dataset_name cifar-100 \
        --num_queries 1 4 16 32 64 --d_out 1 2 4 --learning_rates 1e-3 1e-2 --use_token_cache --epochs 90

Every probe reads the same stream of tokens: with ``--use_token_cache`` the backbone runs once per image for the
whole sweep (tokens of the deterministic eval preprocessing, no augmentation); without it, once per batch for all
probes together. Each probe keeps its own optimizer and best epoch and is saved as a normal probe directory in
``--output_dir`` (with ``results.json`` and ``results.md``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..cache.features import global_features
from ..cache.multiprobe import ProbeSpec, adamw, results_table, stream_requirements, train_probes
from ..cache.streams import CachedTokens, LiveTokens
from ..configuration_probing import EfficientProbingConfig, LinearProbingConfig
from ..modeling_probing import AutoModelForEfficientProbing
from ..probes import valid_num_queries
from .arguments import DataArguments, ModelArguments
from .data import TRAIN, VALIDATION, ImageClassificationDataset
from .images import build_transforms
from .knn import best_knn_result, knn_classify
from .optim import LARS
from .run import cached_split, load_backbone_and_processor, load_data


def sweep_specs(backbone, args, num_labels: int, label_maps: dict) -> list[ProbeSpec]:
    """EP for every valid (num_queries, d_out), the linear probes, each at every learning rate and layer."""
    common = dict(
        backbone_config=backbone.config,
        backbone_name_or_path=args.model_name_or_path,
        backbone_revision=args.model_revision,
        num_labels=num_labels,
        **label_maps,
    )
    width = backbone.config.hidden_size
    specs = []
    for layer in args.feature_layers:
        for lr in args.learning_rates:
            suffix = f"-layer{layer}-lr{lr:g}"
            for d_out in args.d_out:
                for m in args.num_queries:
                    if m in valid_num_queries(width, d_out):
                        config = EfficientProbingConfig(num_queries=m, d_out=d_out, feature_layers=[layer], **common)
                        specs.append(ProbeSpec(f"ep-m{m}-do{d_out}{suffix}", config, lr, seed=args.seed))
            for features in args.linear_features:
                config = LinearProbingConfig(features=features, feature_layers=[layer], **common)
                specs.append(ProbeSpec(f"linear-{features}{suffix}", config, lr, seed=args.seed))
    return specs


def lars(params, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    return LARS(params, lr=learning_rate, weight_decay=weight_decay)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--model_name_or_path", help="backbone Hub id or path (None: the embedded backbone)")
    parser.add_argument("--model_revision", help="backbone revision")
    parser.add_argument("--dataset_name", help="data set (None: the embedded one); as for hf-probe train")
    parser.add_argument("--output_dir", default="probing-output/sweep", help="one probe directory per probe here")
    parser.add_argument("--num_queries", type=int, nargs="+", default=[1, 4, 16, 32], help="EP queries M")
    parser.add_argument("--d_out", type=int, nargs="+", default=[1], help="EP output reductions D_o")
    parser.add_argument("--linear_features", nargs="*", default=["cls", "gap"], help="linear probes")
    parser.add_argument("--learning_rates", type=float, nargs="+", default=[1e-3], help="every probe at each")
    parser.add_argument("--feature_layers", type=int, nargs="+", default=[-1], help="hidden states read, each")
    parser.add_argument("--optimizer", choices=["adamw", "lars"], default="adamw", help="optimizer of every probe")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs")
    parser.add_argument("--batch_size", type=int, default=64, help="images per step")
    parser.add_argument("--seed", type=int, default=0, help="probe initialisation and batch order")
    parser.add_argument("--use_token_cache", action="store_true", help="extract the tokens once, train from disk")
    parser.add_argument("--token_cache_dir", default="token-cache", help="where the token cache lives")
    parser.add_argument("--knn_features", nargs="*", default=[], help="with the cache: k-NN of cls and/or gap features")
    args = parser.parse_args(argv)

    dataset, image_column, label_column, labels, _ = load_data(DataArguments(dataset_name=args.dataset_name))
    model_args = ModelArguments(model_name_or_path=args.model_name_or_path, model_revision=args.model_revision)
    backbone, processor = load_backbone_and_processor(model_args)
    _, eval_transform = build_transforms(processor)
    label_maps = {"id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}
    specs = sweep_specs(backbone, args, len(labels), label_maps)
    layers, selection = stream_requirements(specs)
    if "cls" in args.knn_features:
        selection = "all"  # k-NN on [CLS] features reads the [CLS] token from the cache too
    images = {
        split: ImageClassificationDataset(dataset[split], image_column, label_column, eval_transform, split)
        for split in (TRAIN, VALIDATION)
    }
    if args.knn_features and not args.use_token_cache:
        parser.error("--knn_features reads the token cache: add --use_token_cache.")
    if args.use_token_cache:
        reader_model = AutoModelForEfficientProbing.from_config(specs[0].config, backbone=backbone)
        streams = [
            CachedTokens(
                cached_split(reader_model, dataset, split, image_column, label_column, eval_transform, processor,
                             args.token_cache_dir, layers, token_selection=selection)
            )
            for split in (TRAIN, VALIDATION)
        ]  # fmt: skip
    else:
        streams = [LiveTokens(backbone, images[split], layers, selection) for split in (TRAIN, VALIDATION)]
    optimizer = lars if args.optimizer == "lars" else adamw
    results = train_probes(
        specs,
        backbone,
        *streams,
        epochs=args.epochs,
        batch_size=args.batch_size,
        data_seed=args.seed,
        optimizer=optimizer,
        output_dir=args.output_dir,
    )
    table = results_table(results)
    if args.use_token_cache:
        for features in args.knn_features:
            train, test = (
                global_features(stream.dataset.cache, features, feature_layers=layers[-1:]) for stream in streams
            )
            best = best_knn_result(knn_classify(*train, *test, num_classes=len(labels)))
            table += (
                f"\n| k-NN {features} (k={best['k']}, T={best['temperature']}) | 0 | {100 * best['top1']:.2f} | - |"
            )
    (Path(args.output_dir) / "results.md").write_text(table + "\n")
    print(table)
    return results


if __name__ == "__main__":
    main()
