"""The ``hf-probe sweep`` job: a Figure-2-style sweep on one frozen backbone: many probes trained together, one table of probe, params, top-1.

    hf-probe sweep                                      # offline: the embedded synthetic backbone and data set
    hf-probe sweep --model_name_or_path facebook/vit-mae-base --dataset_name cifar-100 \
        --num_queries 1 4 16 32 64 --d_out 1 2 4 --learning_rates 1e-3 1e-2 --use_token_cache --num_train_epochs 90

Every probe is a member of one grid (`hf_efficient_probing.training.grid`) trained in one `Trainer` run: with
``--use_token_cache`` the backbone runs once per image for the whole sweep (tokens of the deterministic eval
preprocessing, no augmentation); without it, once per batch for all probes together. Each probe's epoch is chosen on
a split held out from train (``--selection_fraction``), then it is evaluated once on the evaluation split and saved
as a normal probe directory in ``--output_dir/members/<name>`` (the table: ``results.md`` and ``results.json``).
``hf-probe sweep`` parses the command line (`sweep_parser`) and gives `run_probe_sweep` its backbone and prepared
data (the synthetic demo's for what the command line leaves unset).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hf_efficient_probing.backbones import vision_config
from hf_efficient_probing.cache.features import global_features
from hf_efficient_probing.probes import valid_num_queries
from hf_efficient_probing.training.arguments import ProbingTrainingArguments
from hf_efficient_probing.training.data import SELECTION, TRAIN, VALIDATION, PreparedData
from hf_efficient_probing.training.grid import GridMember, ProbingGridModel
from hf_efficient_probing.training.knn import select_knn
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


def sweep_parser() -> argparse.ArgumentParser:
    """The sweep's command line (``hf-probe sweep --help``)."""
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
    parser.add_argument(
        "--knn_features",
        nargs="*",
        default=[],
        help="with the cache: k-NN of cls and/or gap features, (k, T) chosen on the held-out split",
    )
    return parser


def parse_sweep_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The sweep's arguments, with the combinations it cannot run refused."""
    parser = sweep_parser()
    args = parser.parse_args(argv)
    if args.knn_features and not args.use_token_cache:
        parser.error("--knn_features reads the token cache: add --use_token_cache.")
    return args


def run_probe_sweep(args: argparse.Namespace, backbone, data: PreparedData) -> list[dict]:
    """Train every probe of the sweep (``args`` from `parse_sweep_arguments`) on ``backbone`` and ``data`` in one
    grid, each chosen on a held-out part of train and evaluated once; write and print the table, return its rows."""
    data = data.hold_out_selection(args.selection_fraction, args.seed)
    grid = ProbingGridModel.from_backbone(
        backbone,
        sweep_members(backbone, args),
        seed=args.seed,
        revision=args.model_revision,
        num_labels=data.num_labels,
        **data.label_maps,
    )
    selection = "all" if "cls" in args.knn_features else grid.token_selection  # k-NN on [CLS] reads it from the cache
    if args.use_token_cache:
        layers = list(grid.layout.feature_layers)
        caches = {
            split: data.token_cache(
                split, grid.member_models[0], args.token_cache_dir, layers, token_selection=selection
            )
            for split in SPLITS
        }
        sets = [caches[split].dataset(token_selection=grid.token_selection) for split in SPLITS]
    else:
        sets = [data.images(split) for split in SPLITS]
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
    result = train_grid(grid, training_args, *sets, image_processor=data.image_processor, evaluate_every_member=True)
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
        for features in args.knn_features:  # (k, T) chosen on the held-out split, like every probe's epoch
            bank, held_out, evaluation = (
                global_features(caches[split], features, feature_layers=layer) for split in SPLITS
            )
            knn = select_knn(bank, held_out, evaluation, num_classes=data.num_labels)
            chosen, evaluated = knn["chosen"], knn["evaluation"]
            table += (
                f"\n| k-NN {features} (k={chosen['k']}, T={chosen['temperature']}) | 0 | "
                f"{100 * chosen['top1']:.2f} | - | {100 * evaluated['top1']:.2f} |"
            )
    (Path(args.output_dir) / "results.md").write_text(table + "\n")
    (Path(args.output_dir) / "results.json").write_text(json.dumps(rows, indent=1))
    print(table)
    return rows
