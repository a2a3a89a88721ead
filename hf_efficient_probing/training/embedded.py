"""The offline default job: a data set and a backbone the package makes itself, so the main command needs no Hub.

:func:`embedded_dataset` draws a small image-classification set (coloured shapes and textures on noisy
backgrounds, random positions, sizes and colours, fixed seed). :func:`embedded_backbone` builds a small ViT from a
config with a fixed seed (random weights: its features are generic, not learned). Both are deterministic, so two
runs with the same seed give the same numbers. Swap either function to change what the default job probes.
"""

from __future__ import annotations

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features
from datasets import Image as ImageFeature
from PIL import Image, ImageDraw
from transformers import ViTConfig, ViTImageProcessor

from ..backbones import build_backbone

CLASSES = ("disc", "square", "triangle", "ring", "cross", "stripes", "checker", "dots")
IMAGE_SIZE = 40  # drawn size; the backbone reads 32 x 32 crops


def _draw(kind: str, rng: np.random.Generator, size: int = IMAGE_SIZE) -> Image.Image:
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
    else:  # pragma: no cover - CLASSES lists every kind
        raise ValueError(kind)
    return image


def embedded_dataset(
    train_per_class: int = 48, validation_per_class: int = 24, num_classes: int = len(CLASSES), seed: int = 0
) -> DatasetDict:
    """A deterministic ``DatasetDict`` with ``train`` and ``validation`` splits of ``image``/``label`` rows."""
    if not 1 <= num_classes <= len(CLASSES):
        raise ValueError(f"num_classes must be in [1, {len(CLASSES)}], got {num_classes}.")
    names = list(CLASSES[:num_classes])
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=names)})
    rng = np.random.default_rng(seed)
    splits = {}
    for split, per_class in (("train", train_per_class), ("validation", validation_per_class)):
        labels = [label for label in range(num_classes) for _ in range(per_class)]
        images = [_draw(names[label], rng) for label in labels]
        splits[split] = Dataset.from_dict({"image": images, "label": labels}, features=features)
    return DatasetDict(splits)


def embedded_backbone(
    seed: int = 0, hidden_size: int = 64, num_layers: int = 4, image_size: int = 32, patch_size: int = 4
):
    """``(backbone, image_processor)``: a small ViT with random weights drawn from ``seed``, and its processor."""
    config = ViTConfig(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden_size,
        image_size=image_size,
        patch_size=patch_size,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        backbone = build_backbone(config).eval()
    finally:
        torch.random.set_rng_state(generator_state)
    processor = ViTImageProcessor(
        size={"height": image_size, "width": image_size}, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]
    )
    return backbone, processor
