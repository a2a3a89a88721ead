"""The ``hf-probe sweep`` job: a Figure-2-style sweep on one frozen backbone, many probes trained together, one table of
probe, params, top-1.

    hf-probe sweep                                      # offline: the embedded synthetic backbone and data set
    hf-probe sweep --model_name_or_path facebook/vit-mae-base --dataset_name cifar-100 \
        --num_queries 1 4 16 32 64 --d_out 1 2 4 --learning_rates 1e-3 1e-2 --use_token_cache --num_train_epochs 90

Every probe is a member of one grid (`training.grid`) trained in one `Trainer` run: with ``--use_token_cache`` the
backbone runs once per image for the whole sweep (tokens of the deterministic eval preprocessing, no augmentation);
without it, once per batch for all probes together. Each probe's epoch is chosen on a split held out from train
(``--selection_fraction``, ``--subset_seed``), then it is evaluated once on the evaluation split and saved as a normal
probe directory in ``--output_dir/members/<name>`` (the table: ``results.md`` and ``results.json``). The arguments are
those of ``hf-probe train`` (`ModelArguments`, `DataArguments`, `ProbingTrainingArguments`) plus `SweepArguments`,
parsed by one `HfArgumentParser` (:func:`sweep_parser`); a recipe field left unset takes the sweep's value
(``SWEEP_RECIPE``: AdamW, 10 epochs, batch 64), then the default protocol's.
"""

from __future__ import annotations

import os
from pathlib import Path

from transformers import HfArgumentParser

from ..atomic import atomic_write_json, atomic_write_text
from ..backbones import backbone_states, resolve_layers
from ..cache.features import global_features
from ..evaluation.knn import select_knn
from ..probes import valid_num_queries
from ..tables import markdown_table
from .arguments import DataArguments, ModelArguments, ProbingTrainingArguments, SweepArguments
from .data import TRAIN, VALIDATION
from .engine import GridSplits, RunOptions, train_grid
from .grid import GridMember, ProbingGridModel
from .prepared import SELECTION, PreparedData
from .protocols import extraction_options
from .recipes import grid_arguments

SPLITS = (TRAIN, SELECTION, VALIDATION)
SWEEP_RECIPE = dict(optimizer="adamw", num_train_epochs=10.0, per_device_train_batch_size=64)
SWEEP_OUTPUT_DIR = os.path.join("probing-output", "sweep")


def sweep_parser() -> HfArgumentParser:
    """The sweep's command line (``hf-probe sweep --help``): the training job's arguments plus `SweepArguments`."""
    return HfArgumentParser((ModelArguments, DataArguments, SweepArguments, ProbingTrainingArguments))


def parse_sweep_arguments(argv: list[str] | None = None):
    """``(model_args, data_args, sweep_args, training_args)``, with the combinations the sweep cannot run refused."""
    model_args, data_args, sweep_args, training_args = sweep_parser().parse_args_into_dataclasses(argv)
    if sweep_args.knn_features and not data_args.use_token_cache:
        raise SystemExit("hf-probe sweep: --knn_features reads the token cache: add --use_token_cache.")
    for name, value in SWEEP_RECIPE.items():
        if getattr(training_args, name) is None:
            setattr(training_args, name, value)
    if training_args.output_dir == ProbingTrainingArguments.output_dir:  # the class default: the sweep's own
        training_args.output_dir = SWEEP_OUTPUT_DIR
    return model_args, data_args, sweep_args, training_args


def sweep_members(backbone, sweep_args: SweepArguments) -> list[GridMember]:
    """EP for every valid (num_queries, d_out), the linear probes, each at every learning rate and layer."""
    width = backbone_states(backbone.config)[sweep_args.feature_layers[0]].width
    members = []
    for layer in resolve_layers(backbone.config, sweep_args.feature_layers, concatenated=False):
        for lr in sweep_args.learning_rates:
            for d_out in sweep_args.d_out:
                valid = valid_num_queries(width, d_out)
                members += [
                    GridMember("ep", layer, lr, (("num_queries", m), ("d_out", d_out)))
                    for m in sweep_args.num_queries
                    if m in valid
                ]
            members += [GridMember("linear", layer, lr, (("features", f),)) for f in sweep_args.linear_features]
    return members


def run_probe_sweep(
    data_args: DataArguments,
    sweep_args: SweepArguments,
    training_args: ProbingTrainingArguments,
    backbone,
    data: PreparedData,
) -> list[dict]:
    """Train every probe of the sweep on ``backbone`` and ``data`` in one grid, each chosen on a held-out part of
    train and evaluated once; write and print the table, return its rows."""
    data = data.hold_out_selection(data_args.selection_fraction, data_args.subset_seed, data_args.selection_rule)
    grid = ProbingGridModel.from_backbone(
        backbone,
        sweep_members(backbone, sweep_args),
        seed=training_args.seed,
        num_labels=data.num_labels,
        **data.label_maps,
    )
    args = grid_arguments(training_args, len(data.splits[TRAIN]))
    caches = {}
    if data_args.use_token_cache:
        options = extraction_options(data_args.token_cache_dir, args, data_args.cache_per_node)
        for split in SPLITS:  # k-NN on [CLS] reads it from the same cache, which holds every token
            storage = (data_args.token_dtype, data_args.backbone_dtype)
            caches[split] = data.token_cache(split, grid.member_models[0], options, storage=storage, reader=grid.reader)
        splits = GridSplits(*(caches[split].dataset() for split in SPLITS))
    else:
        splits = GridSplits(*(data.images(split) for split in SPLITS))
    options = RunOptions(image_processor=data.eval_processor, evaluate_every_member=True, run_info=data.info)
    result = train_grid(grid, args, splits, options)
    rows = [
        {"name": name, **metrics, "path": str(Path(args.output_dir) / "members" / name)}
        for name, metrics in result.member_metrics.items()
    ]
    table = sweep_table(rows, _knn_rows(caches, sweep_args, grid, data) if caches else [])
    atomic_write_text(Path(args.output_dir) / "results.md", table + "\n")
    atomic_write_json(Path(args.output_dir) / "results.json", rows)
    print(table)
    return rows


def _knn_rows(caches: dict, sweep_args: SweepArguments, grid: ProbingGridModel, data: PreparedData) -> list[list[str]]:
    """One row per k-NN feature: (k, T) chosen on the held-out split, like every probe's epoch."""
    rows = []
    for features in sweep_args.knn_features:
        layer = grid.layout.feature_layers[-1:]
        bank, held_out, evaluation = (
            global_features(caches[split], features, feature_layers=layer) for split in SPLITS
        )
        knn = select_knn(bank, held_out, evaluation, num_classes=data.num_labels)
        chosen, evaluated = knn["chosen"], knn["evaluation"]
        name = f"k-NN {features} (k={chosen['k']}, T={chosen['temperature']})"
        rows.append([name, "0", f"{100 * chosen['top1']:.2f}", "-", f"{100 * evaluated['top1']:.2f}"])
    return rows


def sweep_table(rows: list[dict], knn_rows: list[list[str]]) -> str:
    """The sweep's results as a Markdown table: probe, parameters, selection and evaluation top-1."""
    cells = [
        [
            row["name"],
            f"{row['probe_parameters']:,}",
            f"{100 * row['selection_accuracy']:.2f}",
            f"{row['best_epoch']:g}",
            f"{100 * row['eval_accuracy']:.2f}",
        ]
        for row in rows
    ]
    headers = ["probe", "params", "selection top-1 (%)", "best epoch", "eval top-1 (%)"]
    return markdown_table(headers, cells + knn_rows, ["left", "right", "right", "right", "right"])
