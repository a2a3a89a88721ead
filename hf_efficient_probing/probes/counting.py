"""Trainable-parameter accounting of probe heads, as the paper reports it (pooling + classifier).

``python -m hf_efficient_probing.probes`` prints the table for ViT-B (D=768, 1000 classes).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from . import build_pooling
from .head import ProbeHead

# (label, pooling name, pooling kwargs) of the settings the paper compares, official defaults (16 heads for aim and
# jepa, the official --num_heads; each module's own default elsewhere). mhca is not in the official code.
PAPER_SETTINGS: list[tuple[str, str, dict]] = [
    ("linear", "linear", {"features": "cls"}),
    ("ep M=32 D_o=1", "ep", {"num_queries": 32, "d_out": 1}),
    ("ep M=32 D_o=2", "ep", {"num_queries": 32, "d_out": 2}),
    ("ep M=32 D_o=4", "ep", {"num_queries": 32, "d_out": 4}),
    ("ep M=32 D_o=8", "ep", {"num_queries": 32, "d_out": 8}),
    ("esimpool", "esimpool", {}),
    ("cbam", "cbam", {}),
    ("simpool", "simpool", {}),
    ("abmilp", "abmilp", {}),
    ("dolg", "dolg", {}),
    ("coca", "coca", {}),
    ("aim", "aim", {}),
    ("cae", "cae", {}),
    ("clip", "clip", {}),
    ("siglip", "siglip", {}),
    ("dinovit", "dinovit", {}),
    ("jepa", "jepa", {}),
    ("cait", "cait", {}),
    ("mhca", "mhca", {}),
]


def count_trainable_parameters(module: nn.Module) -> int:
    """Number of parameters with ``requires_grad`` (BatchNorm statistics are buffers, not counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def probe_parameter_count(pooling: str, hidden_size: int, num_labels: int, **pooling_kwargs) -> int:
    """Trainable parameters of a probe head (pooling + classifier), built on the meta device (no memory used)."""
    with torch.device("meta"):
        head = ProbeHead(build_pooling(pooling, hidden_size, **pooling_kwargs), num_labels)
    return count_trainable_parameters(head)


def parameter_table(hidden_size: int = 768, num_labels: int = 1000) -> list[tuple[str, int]]:
    return [(label, probe_parameter_count(name, hidden_size, num_labels, **kw)) for label, name, kw in PAPER_SETTINGS]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hidden-size", type=int, default=768)
    parser.add_argument("--num-labels", type=int, default=1000)
    args = parser.parse_args(argv)
    rows = parameter_table(args.hidden_size, args.num_labels)
    width = max(len(label) for label, _ in rows)
    print(f"{'probe':<{width}}  trainable parameters (D={args.hidden_size}, {args.num_labels} classes)")
    for label, count in rows:
        print(f"{label:<{width}}  {count:>12,}")


if __name__ == "__main__":
    main()
