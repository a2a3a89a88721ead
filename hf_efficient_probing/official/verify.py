"""``hf-probe verify``: does a probe's backbone give the features its head was trained on?

A probe's BatchNorm holds the running mean and variance of its pooled features over the images it was trained on
(for the official heads: ImageNet-1k training crops; with momentum 0.1 the statistics are mostly those of the last
few dozen thousand). Run over a sample of such images, the backbone the head was trained on gives those statistics
again, up to sampling noise and the difference between training crops and the evaluation transform used here; a
backbone with other weights, another activation or other tokens gives other features. On labelled ImageNet
validation images the probe's top-1 is also compared with the official ``val_acc1_at_head_epoch`` (recorded by
``hf-probe import-official`` in ``official_head.json``, or given with ``--expected_top1``).

The checks, for ``n`` images:

- mean: the root mean square over channels of ``(mean_c - running_mean_c) / sqrt(running_var_c)``. Sampling noise
  alone gives each term a standard deviation of ``1/sqrt(n)``; the tolerance is ``3/sqrt(n) + 0.25``, the 0.25 (a
  quarter of a standard deviation) a chosen, not measured, allowance for training crops against evaluation crops.
- variance: the root mean square over channels of ``log(var_c / running_var_c)``; sampling noise
  ``sqrt(2 / (n - 1))`` per term, tolerance ``3 * sqrt(2 / (n - 1)) + log(1.5)`` (the same kind of allowance).
- top-1: ``|top-1 - expected|`` within ``2.58 * sqrt(p (1 - p) / n)`` (a 99 % binomial interval of a sample of
  ``n`` images at the expected accuracy ``p``) plus 0.5 points for resizing implementations (PIL against
  torchvision). It says something only on the split the expected figure was measured on (ImageNet val).

    hf-probe verify user/ep-clip-vitl --data_dir imagenet/val --num_images 2000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
from transformers import AutoImageProcessor

from ..images import decode_image
from ..modeling_probing import AutoModelForEfficientProbing
from .mapping import imagenet_wnids
from .release import OFFICIAL_HEAD

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".gif", ".jxl", ".jpe")


@dataclass(frozen=True)
class Check:
    """One comparison: ``value`` against ``tolerance`` (passes when within it), with the figures that went in."""

    name: str
    value: float
    tolerance: float
    described: str

    @property
    def passed(self) -> bool:
        return self.value <= self.tolerance


@dataclass(frozen=True)
class Verification:
    checks: tuple[Check, ...]
    num_images: int
    skipped: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def render(self) -> str:
        lines = [
            f"{check.name}: {check.described} -> {'match' if check.passed else 'MISMATCH'}" for check in self.checks
        ]
        lines += [f"not checked: {reason}" for reason in self.skipped]
        verdict = (
            "MATCH: the backbone gives the features the head was trained on, within the tolerances"
            if self.passed
            else "MISMATCH: this backbone does not give the features the head was trained on (other weights, "
            "activation or tokens), or the images are not of the data set the head was trained on"
        )
        return "\n".join([*lines, f"verdict on {self.num_images} images: {verdict}"])


def image_sample(data_dir: str | os.PathLike, num_images: int, seed: int = 0) -> list[tuple[Path, str | None]]:
    """Up to ``num_images`` images under ``data_dir`` (all for 0), drawn with ``seed``, each with its class folder
    (the folder directly under ``data_dir``, as an ImageFolder has it), or ``None`` for an image at the top."""
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--data_dir {root} is not a folder of images.")
    files = sorted(path for path in root.rglob("*") if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file())
    if not files:
        raise FileNotFoundError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) under {root}.")
    if 0 < num_images < len(files):
        files = sorted(random.Random(seed).sample(files, num_images))
    return [
        (path, path.relative_to(root).parts[0] if len(path.relative_to(root).parts) > 1 else None) for path in files
    ]


def class_indices(folders: set[str], config) -> tuple[dict[str, int] | None, str | None]:
    """Class folder -> label of the probe: ImageNet WNIDs for a 1000-class probe, the probe's own label names, or the
    sorted folders when there are as many as labels (an ImageFolder); ``(None, why)`` when none of these fits."""
    if config.num_labels == 1000 and folders <= set(wnids := imagenet_wnids()):
        return {wnid: index for index, wnid in enumerate(wnids)}, None
    label2id = {str(name): int(index) for index, name in (config.id2label or {}).items()}
    if folders <= set(label2id):
        return label2id, None
    if len(folders) == config.num_labels:
        return {name: index for index, name in enumerate(sorted(folders))}, None
    return (
        None,
        f"top-1: the {len(folders)} class folders match no labelling of the probe's {config.num_labels} classes",
    )


def expected_top1_of(probe: str, token: str | bool | None = None) -> float | None:
    """The official ``val_acc1_at_head_epoch`` an import recorded beside the probe, if any."""
    path = Path(probe) / OFFICIAL_HEAD
    if not path.is_file():
        if os.path.isdir(probe):
            return None
        try:
            path = Path(hf_hub_download(probe, OFFICIAL_HEAD, token=token))
        except (EntryNotFoundError, LocalEntryNotFoundError):
            return None
    return float(json.loads(path.read_text())["meta"]["val_acc1_at_head_epoch"])


@torch.no_grad()
def verify_probe(
    model,
    image_processor,
    images: list[tuple[Path, str | None]],
    expected_top1: float | None = None,
    batch_size: int = 32,
) -> Verification:
    """Compare the statistics of ``model``'s pooled features over ``images`` with its BatchNorm's, and its top-1
    (where the images have class folders that label them) with ``expected_top1`` (percent)."""
    model.eval()
    labels, skipped = None, []
    folders = {folder for _, folder in images}
    if expected_top1 is None:
        skipped.append("top-1: no expected figure (an import-official probe records it; else --expected_top1)")
    elif None in folders:
        skipped.append("top-1: some images are not in class folders")
    else:
        indices, why = class_indices(folders, model.config)
        labels = None if indices is None else torch.tensor([indices[folder] for _, folder in images])
        skipped += [why] if why else []
    total = squares = None
    correct = 0
    for start in range(0, len(images), batch_size):
        batch = [decode_image(path, f"the image {path}") for path, _ in images[start : start + batch_size]]
        inputs = image_processor(batch, return_tensors="pt")
        read = model.read_tokens(**inputs)
        tokens = read.tokens.to(model.probe.classifier.weight.dtype)
        pooled = model.probe.pooling(
            tokens, num_prefix_tokens=read.num_prefix_tokens, grid_size=read.grid_size, token_mask=read.mask
        )
        features = pooled.pooled.double()
        total = features.sum(0) if total is None else total + features.sum(0)
        squares = (features**2).sum(0) if squares is None else squares + (features**2).sum(0)
        if labels is not None:
            predicted = model.probe.classify(pooled).logits.argmax(-1)
            correct += int((predicted == labels[start : start + batch_size]).sum())
    n = len(images)
    if n < 2:
        raise ValueError("Verifying the statistics needs at least 2 images.")
    mean = total / n
    variance = (squares - n * mean**2) / (n - 1)
    running_mean = model.probe.norm.running_mean.double()
    running_var = model.probe.norm.running_var.double()
    mean_error = float(((mean - running_mean) ** 2 / running_var).mean().sqrt())
    mean_tolerance = 3 / math.sqrt(n) + 0.25
    log_ratio = torch.log(variance.clamp_min(1e-12) / running_var)
    var_error = float((log_ratio**2).mean().sqrt())
    var_tolerance = 3 * math.sqrt(2 / (n - 1)) + math.log(1.5)
    checks = [
        Check(
            "BatchNorm mean",
            mean_error,
            mean_tolerance,
            f"RMS over {mean.numel()} channels of (mean - running_mean) / running_std = {mean_error:.3f}, "
            f"tolerance {mean_tolerance:.3f} (3/sqrt(n) + 0.25)",
        ),
        Check(
            "BatchNorm variance",
            var_error,
            var_tolerance,
            f"RMS of log(var / running_var) = {var_error:.3f}, tolerance {var_tolerance:.3f} "
            "(3 sqrt(2/(n-1)) + log 1.5)",
        ),
    ]
    if labels is not None:
        top1, p = 100 * correct / n, min(max(expected_top1 / 100, 0.0), 1.0)
        tolerance = 100 * 2.58 * math.sqrt(p * (1 - p) / n) + 0.5
        checks.append(
            Check(
                "top-1",
                abs(top1 - expected_top1),
                tolerance,
                f"{top1:.2f} % against the expected {expected_top1:.2f} %, tolerance +/-{tolerance:.2f} points "
                "(99 % binomial interval + 0.5)",
            )
        )
    return Verification(tuple(checks), n, tuple(skipped))


def verify(
    probe: str,
    data_dir: str | os.PathLike,
    *,
    num_images: int = 500,
    batch_size: int = 32,
    expected_top1: float | None = None,
    seed: int = 0,
    token: str | bool | None = None,
) -> Verification:
    """`verify_probe` for a probe repository or folder (its backbone loaded as its config names it) over a sample of
    ``num_images`` images under ``data_dir`` (0: all)."""
    hub_kwargs = {"token": token} if token else {}
    model = AutoModelForEfficientProbing.from_pretrained(probe, **hub_kwargs)
    image_processor = AutoImageProcessor.from_pretrained(probe, **hub_kwargs)
    if expected_top1 is None:
        expected_top1 = expected_top1_of(probe, token)
    return verify_probe(model, image_processor, image_sample(data_dir, num_images, seed), expected_top1, batch_size)


def main(argv: list[str] | None = None) -> Verification:
    parser = argparse.ArgumentParser(
        description="Check that a probe's backbone gives the features its head was trained on: its BatchNorm "
        "statistics and, on labelled validation images, its top-1.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("probe", help="probe repository or folder (e.g. one hf-probe import-official wrote)")
    parser.add_argument(
        "--data_dir",
        required=True,
        help="images of the data set the head was trained on (ImageNet train or val); class folders "
        "(an ImageFolder, e.g. ImageNet val by WNID) also check the top-1",
    )
    parser.add_argument("--num_images", type=int, default=500, help="images drawn from --data_dir (0: all)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument(
        "--expected_top1", type=float, default=None, help="top-1 (percent) to compare with (None: the recorded one)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the image sample")
    parser.add_argument("--token", default=None, help="Hub token (None: HF_TOKEN or the saved login)")
    args = parser.parse_args(argv)
    verification = verify(
        args.probe,
        args.data_dir,
        num_images=args.num_images,
        batch_size=args.batch_size,
        expected_top1=args.expected_top1,
        seed=args.seed,
        token=args.token,
    )
    print(verification.render())
    if not verification.passed:
        sys.exit(1)
    return verification


if __name__ == "__main__":
    main()
