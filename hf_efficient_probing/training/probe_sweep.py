"""The ``hf-probe sweep`` job: a Figure-2-style sweep on one frozen backbone: many probes trained together, one table of probe, params, top-1.

    hf-probe sweep                                      # offline: the embedded synthetic backbone and data set
    hf-probe sweep --model_name_or_path facebook/vit-mae-base --dataset_name cifar-100 \
        --num_queries 1 4 16 32 64 --d_out 1 2 4 --learning_rates 1e-3 1e-2 --use_token_cache --num_train_epochs 90

Every probe is a member of one grid (`hf_efficient_probing.training.grid`) trained in one `Trainer` run: with
``--use_token_cache`` the backbone runs once per image for the whole sweep (tokens of the deterministic eval
preprocessing, no augmentation); without it, once per batch for all probes together. Each probe's epoch is chosen on
a split held out from train (``--selection_fraction``), then it is evaluated once on the evaluation split and saved
as a normal probe directory in ``--output_dir/members/<name>`` (the table: ``results.md`` and ``results.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from datasets import DatasetDict

from hf_efficient_probing.backbones import vision_config
from hf_efficient_probing.cache.features import global_features
from hf_efficient_probing.probes import valid_num_queries
from hf_efficient_probing.training.arguments import DataArguments, ModelArguments, ProbingTrainingArguments
from hf_efficient_probing.training.data import TRAIN, VALIDATION, ImageClassificationDataset, hold_out_for_selection
from hf_efficient_probing.training.grid import GridMember, ProbingGridModel
from hf_efficient_probing.training.images import build_transforms
from hf_efficient_probing.training.knn import best_knn_result, knn_classify
from hf_efficient_probing.training.run import SELECTION, cached_split, load_backbone_and_processor, load_data
from hf_efficient_probing.training.sweep import train_grid

SPLITS = (TRAIN, SELECTION, VALIDATION)


def sweep_members(backbone, args) -> list[GridMember]:
    """EP for every valid (num_queries, d_out), the linear probes, each at every learning rate and layer."""
    config = vision_config(backbone.config)
    members = []
    for layer in args.feature_layers:
        layer = layer % (config.num_hidden_layers + 1)
        for lr in args.learning_rates:
            for d_out in args.d_out:
                for m in args.num_queries:
                    if m in valid_num_queries(config.hidden_size, d_out):
                        members.append(GridMember("ep", layer, lr, (("num_queries", m), ("d_out", d_out))))
            for features in args.linear_features:
                members.append(GridMember("linear", layer, lr, (("features", features),)))
    return members


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_name_or_path", help="backbone Hub id or path (default: the embedded backbone)")
    parser.add_argument("--model_revision")
    parser.add_argument("--dataset_name", help="data set (default: the embedded one); see run_probing.py")
    parser.add_argument("--output_dir", default="probing-output/sweep")
    parser.add_argument("--num_queries", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--d_out", type=int, nargs="+", default=[1])
    parser.add_argument("--linear_features", nargs="*", default=["cls", "gap"])
    parser.add_argument("--learning_rates", type=float, nargs="+", default=[1e-3])
    parser.add_argument("--feature_layers", type=int, nargs="+", default=[-1])
    parser.add_argument("--optimizer", choices=["adamw", "lars", "sgd"], default="adamw")
    parser.add_argument("--num_train_epochs", type=float, default=10)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--selection_fraction", type=float, default=0.1, help="of train, held out to pick epochs")
    parser.add_argument("--seed", type=int, default=0, help="probe initialisation, batch order, held-out split")
    parser.add_argument("--use_token_cache", action="store_true", help="extract the tokens once, train from disk")
    parser.add_argument("--token_cache_dir", default=None, help="default: $HF_HOME/hf_efficient_probing/token-cache")
    parser.add_argument("--knn_features", nargs="*", default=[], help="with the cache: k-NN of cls and/or gap features")
    args = parser.parse_args(argv)
    if args.knn_features and not args.use_token_cache:
        parser.error("--knn_features reads the token cache: add --use_token_cache.")

    dataset, image_column, label_column, labels, _ = load_data(DataArguments(dataset_name=args.dataset_name))
    dataset = DatasetDict(dataset)
    dataset[TRAIN], dataset[SELECTION] = hold_out_for_selection(
        dataset[TRAIN], label_column, args.selection_fraction, args.seed, labels
    )
    model_args = ModelArguments(model_name_or_path=args.model_name_or_path, model_revision=args.model_revision)
    backbone, processor = load_backbone_and_processor(model_args)
    _, eval_transform = build_transforms(processor)
    grid = ProbingGridModel.from_backbone(
        backbone,
        sweep_members(backbone, args),
        seed=args.seed,
        revision=args.model_revision,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    selection = "all" if "cls" in args.knn_features else grid.token_selection  # k-NN on [CLS] reads it from the cache
    if args.use_token_cache:
        caches = {
            split: cached_split(grid.member_models[0], dataset, split, image_column, label_column, eval_transform,
                                processor, args.token_cache_dir, list(grid.layout.feature_layers),
                                token_selection=selection)
            for split in SPLITS
        }  # fmt: skip
        sets = [caches[split].dataset(token_selection=grid.token_selection) for split in SPLITS]
    else:
        sets = [ImageClassificationDataset(dataset[s], image_column, label_column, eval_transform, s) for s in SPLITS]
    training_args = ProbingTrainingArguments(
        output_dir=args.output_dir,
        optimizer=args.optimizer,
        num_train_epochs=args.num_train_epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        seed=args.seed,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    result = train_grid(grid, training_args, *sets, image_processor=processor, evaluate_every_member=True)
    rows = [
        {"name": name, **metrics, "path": str(Path(args.output_dir) / "members" / name)}
        for name, metrics in result.member_metrics.items()
    ]
    lines = ["| probe | params | selection top-1 (%) | best epoch | eval top-1 (%) |", "|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['name']} | {row['probe_parameters']:,} | {100 * row['selection_accuracy']:.2f} | "
            f"{row['best_epoch']:g} | {100 * row['eval_accuracy']:.2f} |"
        )
    table = "\n".join(lines)
    if args.use_token_cache:
        layer = grid.layout.feature_layers[-1:]
        for features in args.knn_features:
            train, test = (
                global_features(caches[split], features, feature_layers=layer) for split in (TRAIN, VALIDATION)
            )
            best = best_knn_result(knn_classify(*train, *test, num_classes=len(labels)))
            table += (
                f"\n| k-NN {features} (k={best['k']}, T={best['temperature']}) | 0 | - | - | {100 * best['top1']:.2f} |"
            )
    (Path(args.output_dir) / "results.md").write_text(table + "\n")
    (Path(args.output_dir) / "results.json").write_text(json.dumps(rows, indent=1))
    print(table)
    return rows
