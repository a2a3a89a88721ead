#!/usr/bin/env python
"""The default grid's training cost on cached tokens against the backbone's forward, per image, for a plan at scale.

    python benchmarks/grid_cost.py [--backbone vit-b16 | vit-l14] [--batch 64] [--steps 3]

The default protocol's grid for a ViT with 1,000 classes (EP and linear, the layers at 3/4 depth and last, the 8
learning rates: 32 members) trains on cached tokens; one of its steps is every member's forward, backward and AdamW
step on one batch of tokens. Timed here, on random tokens of the backbone's shape ([CLS] + patches of both layers),
against a forward of the same (random-weight) backbone at 224 px on the same machine, alternating (so that load
from other jobs hits both alike), after a warm-up of each, the best of ``--steps`` counting. The
ratio carries the grid's cost over to a machine where only the backbone's speed is known (README, *ImageNet-size
runs*): grid time per epoch = ratio x extraction time. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import ViTConfig  # noqa: E402

from hf_efficient_probing.backbones import build_backbone  # noqa: E402
from hf_efficient_probing.training.grid import ProbingGridModel, grid_members  # noqa: E402
from hf_efficient_probing.training.recipes import (  # noqa: E402
    DEFAULT_BASE_LEARNING_RATES,
    default_feature_layers,
    optimizer_for_groups,
)

BACKBONES = {
    "vit-b16": {},  # ViTConfig's defaults: ViT-B/16 at 224 px
    "vit-l14": dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, patch_size=14
    ),
}
NUM_LABELS = 1000


def grid_step(grid: ProbingGridModel, optimizer, tokens: torch.Tensor, labels: torch.Tensor) -> float:
    """Seconds of one training step of every member: forward, backward, AdamW."""
    start = time.perf_counter()
    grid(tokens=tokens, labels=labels)["loss"].backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


@torch.inference_mode()
def forward(backbone, images: torch.Tensor) -> float:
    """Seconds of the backbone's forward of ``images``."""
    start = time.perf_counter()
    backbone(pixel_values=images)
    return time.perf_counter() - start


def measure(grid, backbone, tokens, labels, images, steps: int) -> tuple[float, float]:
    """The best of ``steps`` grid steps and forwards, alternating (load from other jobs hits both alike), after one
    warm-up of each."""
    optimizer = optimizer_for_groups(grid.parameter_groups(), "adamw")
    grid.train()
    grid_step(grid, optimizer, tokens, labels), forward(backbone, images)
    pairs = [(grid_step(grid, optimizer, tokens, labels), forward(backbone, images)) for _ in range(steps)]
    return min(step for step, _ in pairs), min(seconds for _, seconds in pairs)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", choices=list(BACKBONES), default="vit-b16")
    parser.add_argument("--batch", type=int, default=64, help="the default recipe's batch per device")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after a warm-up (the best counts)")
    parser.add_argument("--forward_batch", type=int, default=4)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    backbone = build_backbone(ViTConfig(**BACKBONES[args.backbone])).eval()
    layers = default_feature_layers(backbone.config.num_hidden_layers)
    members = grid_members(["ep", "linear"], layers, DEFAULT_BASE_LEARNING_RATES)
    grid = ProbingGridModel.from_backbone(backbone, members, num_labels=NUM_LABELS)  # each kind's defaults
    layout = grid.layout  # what the grid's cache holds: both layers side by side, [CLS] first when a member reads it
    patches = (224 // backbone.config.patch_size) ** 2
    tokens = torch.randn(args.batch, layout.num_prefix_tokens + patches, len(layers) * layout.hidden_size)
    labels = torch.randint(NUM_LABELS, (args.batch,))
    images = torch.randn(args.forward_batch, 3, 224, 224)
    step, forward_s = measure(grid, backbone, tokens, labels, images, args.steps)
    forward_per_image = forward_s / args.forward_batch
    result = {
        "backbone": args.backbone,
        "layers": layers,
        "members": len(members),
        "tokens": list(tokens.shape[1:]),
        "threads": torch.get_num_threads(),
        "grid_ms_per_image_epoch": 1000 * step / args.batch,
        "member_ms_per_image_epoch": 1000 * step / args.batch / len(members),
        "forward_ms_per_image": 1000 * forward_per_image,
        "grid_epoch_vs_forward": step / args.batch / forward_per_image,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
