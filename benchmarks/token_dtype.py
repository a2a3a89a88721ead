#!/usr/bin/env python
"""Probe accuracy and disk from 8-bit tokens (float8, int8) against the float16 tokens the default run stores, with
bfloat16 tokens as the floor: what rounding alone moves.

    python benchmarks/reference_adamw.py prepare DATA_ROOT          # the README's reference data sets, offline
    python benchmarks/token_dtype.py DATA_ROOT [--datasets fashion-160 digits fashion-2000] [--seeds 0 1 2 3 4]

Per reference data set (README, *Default protocol: measured against a tuned AdamW probe*) and token type, one run of
the default protocol as ``examples/run_probing.py`` parses it, with ``--token_dtype`` the only change: the backbone
extracts into a cache of that type (the same backbone outputs each time, stored through the cache's own encoder),
and the probes train on what the cache decodes. Training the whole layer x learning-rate grid three times per data
set is too slow for a 2-core CPU, so each kind trains the member the default run chose on float16 tokens (its layer
and base learning rate, from the README's table; the default recipe: AdamW, batch and epochs from the data size),
under every seed of ``--seeds`` in one grid. Each seed's epoch is chosen on the held-out tenth of train; the
evaluation split is read once per seed. The disk is the size of the files of each type's caches (train, held-out
and evaluation splits). Prints a Markdown table: top-1 mean and each seed, the difference to float16, the standard
deviation of the seeds' differences (each seed against float16 under the same seed: the same initialisation and
order), the standard deviation over the seeds, and each type's disk against float16.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import HfArgumentParser  # noqa: E402

from hf_efficient_probing.demo import offline_inputs  # noqa: E402
from hf_efficient_probing.tables import markdown_table  # noqa: E402
from hf_efficient_probing.training import (  # noqa: E402
    DataArguments,
    ModelArguments,
    ProbeArguments,
    ProbingJob,
    ProbingTrainingArguments,
)
from hf_efficient_probing.training.grid import GridMember, seeded_members  # noqa: E402
from hf_efficient_probing.training.job import build_grid  # noqa: E402
from hf_efficient_probing.training.protocols import run_default_protocol  # noqa: E402
from hf_efficient_probing.training.recipes import effective_batch_size, scaled_grid  # noqa: E402

# float16: what the default run stores; bfloat16: a float type with 8 bits of mantissa (relative error 2^-9 against
# float8's 2^-4), which no one calls lossy: how far the figures move when the tokens are only rounded, the floor the
# 8-bit rows are read against
TOKEN_DTYPES = ("float16", "bfloat16", "float8", "int8")
KINDS = ("ep", "linear")
# The setting the default run with --seeds 0 1 2 chose per kind on float16 tokens (README, *Spread over 3 seeds*):
# backbone, and (layer, base learning rate; the run scales it by sqrt(batch / 256)).
CHOSEN = {
    "fashion-160": ("dinov2-s", {"ep": (9, 3e-4), "linear": (9, 3e-2)}),
    "digits": ("tiny-vit", {"ep": (3, 1e-1), "linear": (4, 1e-1)}),
    "fashion-2000": ("tiny-vit", {"ep": (4, 1e-1), "linear": (3, 1e-1)}),
}


def job_for(data_root: Path, name: str, token_dtype: str, seeds, workdir: Path) -> ProbingJob:
    """The default protocol's job on ``name`` with ``--token_dtype token_dtype``, its grid cut to each kind's chosen
    member under every seed."""
    backbone, chosen = CHOSEN[name]
    argv = [
        *("--model_name_or_path", str(data_root / backbone), "--dataset_name", str(data_root / name)),
        *("--output_dir", str(workdir / f"{name}-{token_dtype}"), "--probe", *KINDS, "--prune", "false"),
        *("--token_cache_dir", str(cache_dir(workdir, name, token_dtype)), "--token_dtype", token_dtype),
        *("--feature_layers", *(str(chosen[kind][0]) for kind in KINDS), "--disable_tqdm", "true"),
        *("--report_to", "none"),
    ]
    parser = HfArgumentParser((ModelArguments, DataArguments, ProbeArguments, ProbingTrainingArguments))
    model_args, data_args, probe_args, training_args = parser.parse_args_into_dataclasses(argv)
    inputs = offline_inputs(model_args, data_args)
    job = ProbingJob.from_arguments(model_args, data_args, probe_args, training_args, *inputs)
    members = [
        GridMember(kind, layer, scaled_grid([rate], effective_batch_size(job.args))[0])
        for kind, (layer, rate) in chosen.items()
    ]
    grid = build_grid(job.backbone, seeded_members(members, seeds), job.args.seed, job.kinds, (job.revision, job.data))
    return dataclasses.replace(job, grid=grid)


def cache_dir(workdir: Path, name: str, token_dtype: str) -> Path:
    return workdir / "caches" / f"{name}-{token_dtype}"


def disk_bytes(directory: Path) -> int:
    """The bytes of every file under ``directory``: the shards (tokens, per-token parameters, labels), manifests."""
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def measure(data_root: Path, name: str, seeds, workdir: Path) -> dict:
    """Per token type: each kind's evaluation top-1 per seed, and the disk of its caches."""
    results = {}
    for token_dtype in TOKEN_DTYPES:
        result = run_default_protocol(job_for(data_root, name, token_dtype, seeds, workdir))
        per_kind = {}
        for kind in KINDS:
            per_seed = result.metrics[kind]["per_seed"]
            per_kind[kind] = [per_seed[str(seed)]["eval_accuracy"] for seed in seeds]
        results[token_dtype] = {"top1": per_kind, "disk": disk_bytes(cache_dir(workdir, name, token_dtype))}
        print(json.dumps({name: {token_dtype: results[token_dtype]}}), flush=True)
    return results


def rows(name: str, results: dict) -> list[list[str]]:
    reference = results["float16"]
    table = []
    for token_dtype in TOKEN_DTYPES:
        disk = results[token_dtype]["disk"] / reference["disk"]
        for kind in KINDS:
            top1 = results[token_dtype]["top1"][kind]
            paired = [100 * (value - base) for value, base in zip(top1, reference["top1"][kind], strict=True)]
            difference = statistics.mean(paired)  # each seed against float16 under the same seed (same init)
            paired_std = statistics.stdev(paired) if len(paired) > 1 else float("nan")
            std = 100 * statistics.stdev(top1) if len(top1) > 1 else float("nan")
            cell = f"{100 * statistics.mean(top1):.2f} ({', '.join(f'{100 * v:.1f}' for v in top1)})"
            layer = CHOSEN[name][1][kind][0]
            table.append(
                [
                    name,
                    f"{kind} (layer {layer})",
                    token_dtype,
                    cell,
                    f"{difference:+.2f}",
                    f"{paired_std:.2f}",
                    f"{std:.2f}",
                    f"{disk:.3f}x",
                ]
            )
    return table


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_root", type=Path, help="the folder `reference_adamw.py prepare` wrote")
    parser.add_argument("--datasets", nargs="+", default=list(CHOSEN), choices=list(CHOSEN))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--workdir", type=Path, help="where caches and runs go (default: a temporary folder)")
    args = parser.parse_args(argv)
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        for name in args.datasets:
            table += rows(name, measure(args.data_root, name, args.seeds, workdir))
    headers = ["data set", "probe", "tokens", "top-1 % (seeds)", "- float16", "std of the seeds' differences"]
    headers += ["std over seeds", "disk / float16"]
    text = markdown_table(headers, table, ["left"] * 3 + ["right"] * 5)
    print(text)
    return text


if __name__ == "__main__":
    main()
