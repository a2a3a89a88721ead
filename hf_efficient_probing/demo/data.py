"""The demo's data sets: a seeded Fashion-MNIST subset read from the Debian package's IDX files, or drawn shapes.

Fashion-MNIST (Zalando, MIT licence; 28 x 28 grey photos of 10 kinds of clothing) comes from the Debian package
``dataset-fashion-mnist``, so the real demo needs no Hugging Face Hub; the synthetic one (coloured shapes and
textures drawn from a seed) needs nothing installed. Both are deterministic for a seed.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features
from datasets import Image as ImageFeature
from PIL import Image, ImageDraw

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_INSTALL = "apt-get install -y dataset-fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"
)  # fmt: skip
FASHION_MNIST_FILES = {"train": "train", "validation": "t10k"}  # the official test split serves as validation


class MissingAssetError(FileNotFoundError):
    """A data set or model the real default job needs is not installed; the message says how to install it."""


def _read_idx(path: Path, header_bytes: int) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        return np.frombuffer(handle.read(), dtype=np.uint8, offset=header_bytes)


def fashion_mnist(
    train_per_class: int = 100,
    validation_per_class: int = 50,
    seed: int = 0,
    directory: str | os.PathLike | None = None,
) -> DatasetDict:
    """A stratified random subset of Fashion-MNIST (the same for the same ``seed``) as RGB images: ``train`` from
    its 60,000 training images, ``validation`` from its 10,000 test images (read from ``directory``, by default
    where the Debian package puts them)."""
    directory = Path(directory or FASHION_MNIST_DIR)
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=list(FASHION_MNIST_CLASSES))})
    rng = np.random.default_rng(seed)
    splits = {}
    for split, per_class in (("train", train_per_class), ("validation", validation_per_class)):
        stem = FASHION_MNIST_FILES[split]
        images_path, labels_path = (
            directory / f"{stem}-images-idx3-ubyte.gz",
            directory / f"{stem}-labels-idx1-ubyte.gz",
        )
        if not (images_path.is_file() and labels_path.is_file()):
            raise MissingAssetError(
                f"Fashion-MNIST is not installed ({images_path} is missing). Install it with: "
                f"{FASHION_MNIST_INSTALL}, or run the synthetic default instead (--embedded_default synthetic)."
            )
        labels = _read_idx(labels_path, header_bytes=8)
        images = _read_idx(images_path, header_bytes=16).reshape(len(labels), 28, 28)
        chosen = np.concatenate(
            [rng.choice(np.flatnonzero(labels == label), per_class, replace=False) for label in range(10)]
        )
        splits[split] = Dataset.from_dict(
            {"image": [Image.fromarray(images[i]).convert("RGB") for i in chosen], "label": labels[chosen].tolist()},
            features=features,
        )
    return DatasetDict(splits)


SHAPE_CLASSES = ("disc", "square", "triangle", "ring", "cross", "stripes", "checker", "dots")
SHAPE_IMAGE_SIZE = 40  # drawn size; the backbone reads 32 x 32 crops


def _draw(kind: str, rng: np.random.Generator, size: int = SHAPE_IMAGE_SIZE) -> Image.Image:
    background = rng.integers(0, 96, 3)
    noise = rng.normal(0, 12, (size, size, 3))
    canvas = np.clip(background + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    colour = tuple(int(c) for c in rng.integers(144, 256, 3))
    extent = int(rng.integers(size // 3, size * 3 // 4))
    x0, y0 = (int(v) for v in rng.integers(0, size - extent, 2))
    box = (x0, y0, x0 + extent, y0 + extent)
    width = max(2, extent // 6)
    if kind == "disc":
        draw.ellipse(box, fill=colour)
    elif kind == "square":
        draw.rectangle(box, fill=colour)
    elif kind == "triangle":
        draw.polygon([(x0, y0 + extent), (x0 + extent, y0 + extent), (x0 + extent // 2, y0)], fill=colour)
    elif kind == "ring":
        draw.ellipse(box, outline=colour, width=width)
    elif kind == "cross":
        middle_x, middle_y = x0 + extent // 2, y0 + extent // 2
        draw.line([(x0, middle_y), (x0 + extent, middle_y)], fill=colour, width=width)
        draw.line([(middle_x, y0), (middle_x, y0 + extent)], fill=colour, width=width)
    elif kind == "stripes":
        for offset in range(0, extent, 2 * width):
            draw.rectangle((x0, y0 + offset, x0 + extent, y0 + offset + width - 1), fill=colour)
    elif kind == "checker":
        cell = max(2, extent // 4)
        for row in range(0, extent, cell):
            for col in range(0, extent, cell):
                if (row // cell + col // cell) % 2 == 0:
                    draw.rectangle((x0 + col, y0 + row, x0 + col + cell - 1, y0 + row + cell - 1), fill=colour)
    elif kind == "dots":
        for _ in range(int(rng.integers(4, 8))):
            cx, cy = (int(v) for v in rng.integers(0, size, 2))
            radius = int(rng.integers(2, 4))
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    else:  # pragma: no cover - SHAPE_CLASSES lists every kind
        raise ValueError(kind)
    return image


def synthetic_shapes(
    train_per_class: int = 48, validation_per_class: int = 24, num_classes: int = len(SHAPE_CLASSES), seed: int = 0
) -> DatasetDict:
    """Coloured shapes and textures on noisy backgrounds (random positions, sizes and colours, fixed seed): a
    deterministic ``DatasetDict`` with ``train`` and ``validation`` splits of ``image``/``label`` rows."""
    if not 1 <= num_classes <= len(SHAPE_CLASSES):
        raise ValueError(f"num_classes must be in [1, {len(SHAPE_CLASSES)}], got {num_classes}.")
    names = list(SHAPE_CLASSES[:num_classes])
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=names)})
    rng = np.random.default_rng(seed)
    splits = {}
    for split, per_class in (("train", train_per_class), ("validation", validation_per_class)):
        labels = [label for label in range(num_classes) for _ in range(per_class)]
        images = [_draw(names[label], rng) for label in labels]
        splits[split] = Dataset.from_dict({"image": images, "label": labels}, features=features)
    return DatasetDict(splits)
