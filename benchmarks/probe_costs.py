"""Cost of every probe on the same cached tokens: forward+backward time, trainable parameters and FLOPs.

    python benchmarks/probe_costs.py [--batch 64 --tokens 196 --hidden 768 --labels 1000 --iterations 5]

Prints a Markdown table (the one in README.md, "Probe costs"). Every probe is the full head (pooling -> BatchNorm ->
classifier) in training mode, on the same random tokens, on CPU; time is the median over the iterations after one
warm-up, and relative to the linear probe's. FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode``
(matrix products and convolutions only: element-wise work is not counted) for one forward+backward pass.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from hf_efficient_probing.probes import BASELINE_POOLINGS, ProbeHead, build_pooling
from hf_efficient_probing.probes.counting import count_trainable_parameters

PROBES = [("linear", "linear", {"features": "gap"}), ("ep", "ep", {"num_queries": 32, "d_out": 1})] + [
    (name, name, {}) for name in BASELINE_POOLINGS
]


def step(head: ProbeHead, tokens: torch.Tensor, labels: torch.Tensor, grid: tuple[int, int]) -> None:
    head.zero_grad(set_to_none=True)
    logits = head(tokens, grid_size=grid).logits
    torch.nn.functional.cross_entropy(logits, labels).backward()


def measure(name: str, kwargs: dict, tokens, labels, grid, iterations: int) -> dict:
    torch.manual_seed(0)
    head = ProbeHead(build_pooling(name, tokens.shape[-1], **kwargs), int(labels.max()) + 1).train()
    with FlopCounterMode(display=False) as counter:
        step(head, tokens, labels, grid)
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        step(head, tokens, labels, grid)
        times.append(time.perf_counter() - start)
    return {
        "params": count_trainable_parameters(head),
        "flops": counter.get_total_flops(),
        "ms": 1e3 * statistics.median(times),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=196, help="patch tokens, a square number")
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    side = int(args.tokens**0.5)
    torch.manual_seed(0)
    tokens = torch.randn(args.batch, args.tokens, args.hidden)
    labels = torch.arange(args.batch) % args.labels
    labels[-1] = args.labels - 1
    rows = [(label, measure(name, kw, tokens, labels, (side, side), args.iterations)) for label, name, kw in PROBES]
    linear_ms = rows[0][1]["ms"]
    print(
        f"Forward+backward of the full probe head, B={args.batch}, N={args.tokens}, D={args.hidden}, "
        f"{args.labels} classes, CPU ({torch.get_num_threads()} threads), median of {args.iterations}.\n"
    )
    print("| probe | trainable parameters | GFLOPs (fwd+bwd) | time (ms) | time / linear |")
    print("|---|---:|---:|---:|---:|")
    for label, row in rows:
        print(
            f"| {label} | {row['params']:,} | {row['flops'] / 1e9:.2f} | {row['ms']:.1f} | {row['ms'] / linear_ms:.1f}x |"
        )


if __name__ == "__main__":
    main()
