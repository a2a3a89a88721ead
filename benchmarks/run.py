#!/usr/bin/env python
"""Benchmarks of the token cache, many probes per backbone pass, and EP's aggregate-first order.

    python benchmarks/run.py            # ViT-B/16-sized backbone (random weights) at 224 px, all four benchmarks
    python benchmarks/run.py --quick    # a tiny backbone: a smoke check of every code path (seconds)

Every figure is a ratio of two runs measured side by side in the same process, so the machine's speed cancels out.
Data sets are small (a few dozen images): the ratios depend on how often the backbone runs, not on how many images
there are. With F the backbone's cost per image and P a probe's training cost per image (P << F):

- cache:      E epochs live cost E (F + P); from the cache F + E P (one extraction, then E cheap epochs): up to E x.
- multiprobe: K probes in separate live runs cost K (F + P); in one grid (one pass) F + K P: up to K x.
- lr_grid:    the default protocol's K=8 learning-rate grid from the cache in one Trainer run vs. 8 separate runs
              (each pays the Trainer's start, data loading and evaluations: up to K x) and vs. one single-probe run
              (the grid adds K - 1 probes' P to the shared costs: the target is at most 2x); and the same grid with
              the default rungs, which stop the members out of contention (fewer member-epochs of P).
- ep_order:   the naive order projects N tokens (N D^2 / D_o per image), EP's order M aggregates (M D^2 / (M D_o)):
              what remains is the attention, 2 M N D, so the gain is about (N D / D_o) / (2 M N) at these sizes.
- memory:     training from the cache keeps only a batch in anonymous memory; the shards are memory-mapped, so
              the peak should not grow with the number of cached rows beyond the pages of the mapped files.

On a CPU shared with other jobs, small matrix products lose time to thread hand-offs, so the cached side of
``cache`` trains on one thread (it extracts on all of them) and ``ep_order`` runs both orders on one thread; the
backbone always gets every thread. ``extraction`` (benchmarks/extraction.py) measures the extraction's own speed.
The output ends with one line ``ratios: cache=<x>x multiprobe=<y>x ep_order=<z>x extraction_vs_forward=...
identity_vs_decode=... lr_grid=<w>x lr_grid_rungs=<v>x``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from extraction import bench_extraction, markdown_rows, ratios_line  # noqa: E402
from naive_ep import NaiveOrderEP  # noqa: E402
from transformers import PrinterCallback, Trainer, TrainingArguments, ViTConfig  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

import hf_efficient_probing as hep  # noqa: E402
from hf_efficient_probing.backbones import build_backbone  # noqa: E402
from hf_efficient_probing.cache import CachedSplit, ExtractionOptions, cache_tokens_for_model  # noqa: E402
from hf_efficient_probing.probes import EfficientProbing  # noqa: E402
from hf_efficient_probing.training.arguments import ProbingTrainingArguments  # noqa: E402
from hf_efficient_probing.training.engine import GridSplits, RunOptions, train_grid  # noqa: E402
from hf_efficient_probing.training.grid import GridMember, ProbingGridModel  # noqa: E402
from hf_efficient_probing.training.prepared import probing_collator  # noqa: E402
from hf_efficient_probing.training.recipes import grid_arguments, optimizer_for_groups  # noqa: E402
from hf_efficient_probing.training.rungs import Rungs, edge_reserves  # noqa: E402

HERE = Path(__file__).resolve().parent


@dataclass
class Sizes:
    backbone: dict
    image_size: int
    cache_images: int
    cache_epochs: int
    multi_images: int
    eval_images: int
    ep_batch: int
    ep_tokens: int
    ep_width: int
    ep_queries: int
    memory_rows: tuple[int, int]
    grid_images: int = 128
    grid_selection_images: int = 64  # held out: enough that the rungs can tell members apart
    grid_epochs: int = 10  # the default protocol's fewest; the default rungs fall after epochs 1 and 3
    grid_probes: int = 8  # members of the multiprobe and lr_grid benchmarks (fewer in the quick smoke check)
    batch_size: int = 16
    num_labels: int = 10


FULL = Sizes(
    backbone=dict(),  # ViTConfig defaults: ViT-B/16 at 224 px (86M parameters, 12 blocks of width 768)
    image_size=224,
    cache_images=32,
    cache_epochs=10,
    multi_images=16,
    eval_images=8,
    ep_batch=64,
    ep_tokens=196,
    ep_width=768,
    ep_queries=32,
    memory_rows=(128, 512),
)
QUICK = Sizes(
    backbone=dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32, patch_size=8
    ),
    image_size=32,
    cache_images=16,
    cache_epochs=3,
    multi_images=16,
    eval_images=4,
    ep_batch=8,
    ep_tokens=16,
    ep_width=64,
    ep_queries=8,
    memory_rows=(16, 64),
    grid_images=32,
    grid_selection_images=16,
    grid_epochs=3,
    grid_probes=3,
    batch_size=8,
)


class Images(torch.utils.data.Dataset):
    """Random images and labels: what the backbone sees does not change its cost. With ``signal``, each class
    brightens its images by that much per label, so that probes learn and differ (the grid's rungs then have
    something to decide on)."""

    def __init__(self, count: int, size: int, num_labels: int, seed: int = 0, signal: float = 0.0):
        generator = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(num_labels, (count,), generator=generator)
        self.images = torch.randn(count, 3, size, size, generator=generator) + signal * self.labels[:, None, None, None]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return {"pixel_values": self.images[index], "labels": int(self.labels[index])}


@contextmanager
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def trainer_fit(model, dataset, sizes: Sizes, epochs: int, output_dir: str) -> None:
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=sizes.batch_size,
        num_train_epochs=epochs,
        learning_rate=1e-3,
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset)
    trainer.remove_callback(PrinterCallback)
    trainer.train()


def new_probe(backbone, sizes: Sizes, seed: int = 0):
    torch.manual_seed(seed)
    return hep.VisionModelForEfficientProbing.from_backbone(
        backbone, num_labels=sizes.num_labels, num_queries=sizes.ep_queries
    )


def bench_cache(backbone, sizes: Sizes, workdir: Path) -> dict:
    """E epochs of EP through the HF Trainer: on live images vs. extraction + training on the cached tokens.

    Measured cached, live, cached (each cached run extracts into a new directory), so that a change of load on the
    shared machine during the long live run weighs on both sides. Each side runs as it runs best: the live one with
    every thread for the backbone, the cached one extracting with every thread and training on one (as
    ``demo.run_embedded_default`` does), since its small matrix products lose more to thread hand-offs on a
    busy machine than they gain."""
    data = Images(sizes.cache_images, sizes.image_size, sizes.num_labels)
    with torch.no_grad():  # warm-up: the first forward pass pays for allocations the later ones reuse
        backbone(pixel_values=data.images[: sizes.batch_size])

    def cached(run: int) -> tuple[float, float]:
        model = new_probe(backbone, sizes)
        extract_s, cache = timed(
            lambda: cache_tokens_for_model(
                model,
                data,
                random_split(f"bench-{sizes.cache_images}", "train", sizes.num_labels),
                ExtractionOptions(workdir / f"cache-{run}", batch_size=sizes.batch_size, progress=False),
            )
        )
        with one_thread():  # the probe's matrices are small: a second thread costs more than it gives
            train_s, _ = timed(
                lambda: trainer_fit(model, cache.dataset(), sizes, sizes.cache_epochs, str(workdir / "cached"))
            )
        return extract_s, train_s

    first = cached(0)
    live_s, _ = timed(
        lambda: trainer_fit(new_probe(backbone, sizes), data, sizes, sizes.cache_epochs, str(workdir / "live"))
    )
    second = cached(1)
    extract_s, train_s = ((a + b) / 2 for a, b in zip(first, second, strict=True))
    return {
        "images": sizes.cache_images,
        "epochs": sizes.cache_epochs,
        "live_s": live_s,
        "extract_s": extract_s,
        "cached_train_s": train_s,
        "cached_total_s": extract_s + train_s,
        "ratio": live_s / (extract_s + train_s),
    }


def sweep_members(config: ViTConfig) -> list[GridMember]:
    """Eight probes of a Figure-2-style sweep: EP with several M and D_o, learning rates, layers, linear probes."""
    width, last, middle = config.hidden_size, config.num_hidden_layers, max(config.num_hidden_layers // 2, 1)

    def ep(lr, num_queries, d_out=1, layer=last):
        return GridMember("ep", layer, lr, (("num_queries", min(num_queries, width // d_out)), ("d_out", d_out)))

    return [
        ep(1e-3, 32),
        ep(1e-2, 32),
        ep(1e-3, 16, d_out=2),
        ep(1e-3, 64),
        ep(1e-3, 8, d_out=4),
        ep(1e-3, 32, layer=middle),
        GridMember("linear", last, 1e-2, (("features", "cls"),)),
        GridMember("linear", middle, 1e-2, (("features", "gap"),)),
    ]


def random_split(fingerprint: str, split: str, num_labels: int) -> CachedSplit:
    """The data side of a benchmark cache: random tensors, named by ``fingerprint``."""
    names = tuple(str(label) for label in range(num_labels))
    return CachedSplit(fingerprint, split, "random tensors", "pixel_values", "labels", names)


def grid_fit(
    backbone, members, splits: GridSplits, sizes: Sizes, epochs: int, output_dir: str, every_member=False, rungs=None
):
    """One `train_grid` run (the default protocol's training) of ``members``; its result. ``every_member``: every
    member is also evaluated once on the evaluation split (and saved), not just each kind's chosen one. ``rungs``:
    the grid's rungs (`training.rungs.Rungs`), none by default."""
    grid = ProbingGridModel.from_backbone(backbone, members, num_labels=sizes.num_labels)
    args = ProbingTrainingArguments(
        output_dir=output_dir,
        num_train_epochs=epochs,
        per_device_train_batch_size=sizes.batch_size,
        per_device_eval_batch_size=sizes.batch_size,
        warmup_epochs=0,
        use_cpu=True,
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    options = RunOptions(resume_from_checkpoint=False, evaluate_every_member=every_member, rungs=rungs)
    return train_grid(grid, grid_arguments(args, len(splits.train)), splits, options)


def bench_multiprobe(backbone, sizes: Sizes, workdir: Path) -> dict:
    """K probes trained for one epoch in one grid (one live backbone pass per batch for all) vs. K separate live
    runs. Both sides do the same work besides training: every probe is scored on the selection split every epoch and
    on the evaluation split once (the grid evaluates every member, not just each kind's chosen one)."""
    members = sweep_members(backbone.config)[: sizes.grid_probes]
    train = Images(sizes.multi_images, sizes.image_size, sizes.num_labels, seed=1)
    evaluation = Images(sizes.eval_images, sizes.image_size, sizes.num_labels, seed=2)

    splits = GridSplits(train, evaluation, evaluation)

    def one_pass():
        return grid_fit(backbone, members, splits, sizes, 1, str(workdir / "multi"), every_member=True)

    def separate():
        return [grid_fit(backbone, [member], splits, sizes, 1, str(workdir / "alone")) for member in members]

    first_s, together = timed(one_pass)  # one pass, separate runs, one pass: see bench_cache
    separate_s, alone = timed(separate)
    one_pass_s = (first_s + timed(one_pass)[0]) / 2
    return {
        "probes": len(members),
        "images": sizes.multi_images,
        "eval_images": sizes.eval_images,
        "one_pass_s": one_pass_s,
        "separate_s": separate_s,
        "ratio": separate_s / one_pass_s,
        "table": [
            {"probe": row["name"], "selection_top1": row["selection_accuracy"]} for row in together.summary["members"]
        ],
    }


GRID_SIGNAL = 0.1  # brightness per label: the members' accuracies part ways over the run, as on real data


def bench_lr_grid(backbone, sizes: Sizes, workdir: Path) -> dict:
    """The default protocol's cost: a K=8 learning-rate grid of EP in one Trainer run from the token cache vs. the
    same probes in separate runs from the same cache, and vs. one single-probe run (extraction excluded: it is
    shared by all of them); and the same grid with the default protocol's rungs (members out of contention stop;
    the grid's edge is reported, not extended, as by default). Runs interleaved: grid, single, rungs, separate, grid, single,
    rungs."""
    rates = [10 ** (-4 + 0.5 * i) for i in range(sizes.grid_probes)]
    members = [
        GridMember("ep", backbone.config.num_hidden_layers, rate, (("num_queries", sizes.ep_queries),))
        for rate in rates
    ]
    sets = grid_splits(backbone, sizes, workdir)

    def fit(chosen, name, rungs=None):
        return grid_fit(backbone, chosen, GridSplits(*sets), sizes, sizes.grid_epochs, str(workdir / name), rungs=rungs)

    def compute(chosen):
        grid = ProbingGridModel.from_backbone(backbone, chosen, num_labels=sizes.num_labels)
        return probe_compute(grid, sets[0], sizes.grid_epochs, sizes.batch_size)

    rungs = Rungs()  # the default protocol's: reserves beyond the edge only when the rungs extend it
    revised_members = members + (edge_reserves(members) if rungs.extend_edge else [])
    with one_thread():
        grid_s, _ = timed(lambda: fit(members, "grid"))
        single_s, _ = timed(lambda: fit(members[:1], "single"))
        rungs_s, revised = timed(lambda: fit(revised_members, "rungs", rungs))
        separate_s, _ = timed(lambda: [fit([member], f"alone-{i}") for i, member in enumerate(members)])
        grid_s = (grid_s + timed(lambda: fit(members, "grid"))[0]) / 2
        single_s = (single_s + timed(lambda: fit(members[:1], "single"))[0]) / 2
        rungs_s = (rungs_s + timed(lambda: fit(revised_members, "rungs", rungs))[0]) / 2
        grid_compute_s, single_compute_s = compute(members), compute(members[:1])
    summary = revised.summary
    return {
        "probes": len(members),
        "images": sizes.grid_images,
        "selection_images": sizes.grid_selection_images,
        "epochs": sizes.grid_epochs,
        "grid_s": grid_s,
        "separate_s": separate_s,
        "single_s": single_s,
        "ratio": separate_s / grid_s,
        "grid_vs_single": grid_s / single_s,
        "grid_compute_s": grid_compute_s,
        "single_compute_s": single_compute_s,
        "rungs_s": rungs_s,
        "rungs_ratio": separate_s / rungs_s,
        "rungs_vs_single": rungs_s / single_s,
        "member_epochs": summary["member_epochs"],
        "member_epochs_without_rungs": summary["member_epochs_without_rungs"],
        "stopped": {m["name"]: m["stopped_epoch"] for m in summary["members"] if m["stopped_epoch"] is not None},
        "added": {m["name"]: m["started_epoch"] for m in summary["members"] if m["started_epoch"]},
    }


def grid_splits(backbone, sizes: Sizes, workdir: Path) -> list:
    """The lr_grid benchmark's train, selection and evaluation splits, cached once for every run."""
    reader = hep.AutoModelForEfficientProbing.from_backbone(backbone, probe="ep", num_labels=sizes.num_labels)
    sets = []
    for split, count, seed in (
        ("train", sizes.grid_images, 3),
        ("selection", sizes.grid_selection_images, 4),
        ("evaluation", sizes.eval_images, 5),
    ):
        cache = cache_tokens_for_model(
            reader,
            Images(count, sizes.image_size, sizes.num_labels, seed=seed, signal=GRID_SIGNAL),
            random_split(f"grid-{split}-{count}-signal{GRID_SIGNAL}", split, sizes.num_labels),
            ExtractionOptions(workdir / "grid-cache", batch_size=sizes.batch_size, progress=False),
        )
        sets.append(cache.dataset())
    return sets


def probe_compute(grid: ProbingGridModel, train, epochs: int, batch_size: int) -> float:
    """The training steps' own arithmetic, outside any `Trainer`: forward, backward and AdamW step of ``grid`` over
    ``epochs`` of ``train`` in batches of ``batch_size``, timed alone (the rest of a run's time is its fixed cost)."""
    optimizer = optimizer_for_groups(grid.parameter_groups(), "adamw")
    batches = [
        probing_collator([train[i] for i in range(start, min(start + batch_size, len(train)))])
        for start in range(0, len(train) - batch_size + 1, batch_size)
    ]
    grid.train()

    def steps():
        for _ in range(epochs):
            for batch in batches:
                grid(tokens=batch["tokens"], labels=batch["labels"])["loss"].backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

    return timed(steps)[0]


def bench_ep_order(sizes: Sizes, repeats: int = 15) -> dict:
    """EP forward + backward on cached tokens (no gradient into them): aggregate-first vs. project-every-token.

    The fastest of interleaved repeats, on one thread: on a shared machine other jobs only ever add time, and with
    two threads the many small batched products of the aggregate-first order stall on thread hand-offs whenever
    another job holds a core (measured 2.7-3x there vs. 6.5-7.6x on one thread or an idle machine)."""
    torch.manual_seed(0)
    ep = EfficientProbing(sizes.ep_width, num_queries=sizes.ep_queries)
    naive = NaiveOrderEP(ep)
    tokens = torch.randn(sizes.ep_batch, sizes.ep_tokens, sizes.ep_width)
    torch.testing.assert_close(ep(tokens).pooled, naive(tokens), rtol=1e-4, atol=1e-5)

    def step(forward):
        forward(tokens).square().mean().backward()
        ep.zero_grad(set_to_none=True)

    times = {"aggregate_first": [], "naive": []}
    with one_thread():
        for _ in range(repeats):  # interleaved, so that a burst of load on the machine hits both
            times["aggregate_first"].append(timed(lambda: step(lambda x: ep(x).pooled))[0])
            times["naive"].append(timed(lambda: step(naive))[0])
    fast, slow = min(times["aggregate_first"]), min(times["naive"])
    return {
        "batch": sizes.ep_batch,
        "N": sizes.ep_tokens,
        "D": sizes.ep_width,
        "M": sizes.ep_queries,
        "aggregate_first_ms": 1e3 * fast,
        "naive_ms": 1e3 * slow,
        "ratio": slow / fast,
    }


def bench_memory(sizes: Sizes, workdir: Path) -> dict:
    """Peak memory of one epoch from a cache of n rows and of 4n rows, each in a fresh process.

    The tokens come from a one-block backbone of the full width and grid (its tokens cost the same disk and memory as
    ViT-B's, and it extracts 12x faster)."""
    config = ViTConfig(**{**sizes.backbone, "num_hidden_layers": 1})
    torch.manual_seed(0)
    model = hep.VisionModelForEfficientProbing(
        hep.EfficientProbingConfig(backbone_config=config, num_labels=sizes.num_labels, num_queries=sizes.ep_queries)
    )
    rows = {}
    for count in sizes.memory_rows:
        data = Images(count, sizes.image_size, sizes.num_labels, seed=3)
        cache = cache_tokens_for_model(
            model,
            data,
            random_split(f"memory-{count}", "train", sizes.num_labels),
            ExtractionOptions(workdir / "memory", batch_size=32, progress=False),
        )
        output = subprocess.run(
            [sys.executable, str(HERE / "memory_probe.py"), str(cache.groups[0].directory)],
            capture_output=True,
            text=True,
            check=True,
        )
        measured = json.loads(output.stdout.strip().splitlines()[-1])
        measured["cache_mib"] = sum(shard.bytes for shard in cache.groups[0].shards) / 2**20
        rows[count] = measured
    small, large = (rows[count] for count in sizes.memory_rows)
    mib = 1 / 1024
    return {
        "rows": list(sizes.memory_rows),
        "cache_mib": [small["cache_mib"], large["cache_mib"]],
        "peak_anon_mib": [small["peak_anon_kib"] * mib, large["peak_anon_kib"] * mib],
        "peak_rss_mib": [small["peak_rss_kib"] * mib, large["peak_rss_kib"] * mib],
        "anon_growth_mib": (large["peak_anon_kib"] - small["peak_anon_kib"]) * mib,
        "data_growth_mib": large["cache_mib"] - small["cache_mib"],
    }


def markdown(results: dict, sizes: Sizes, machine: str) -> str:
    c, m, e, mem = results["cache"], results["multiprobe"], results["ep_order"], results["memory"]
    g = results["lr_grid"]
    lines = [
        f"Machine: {machine}. Backbone: ViT, width {e['D'] if sizes is FULL else sizes.backbone.get('hidden_size')}, "
        f"{sizes.image_size} px, random weights.",
        "",
        "| benchmark | baseline | with this library | ratio |",
        "|---|---:|---:|---:|",
        f"| {c['epochs']} epochs of EP (Trainer), {c['images']} images: live vs. cache (extraction included; cached training on 1 thread) "
        f"| {c['live_s']:.1f} s | {c['cached_total_s']:.1f} s ({c['extract_s']:.1f} s extraction) | {c['ratio']:.1f}x |",
        f"| {m['probes']} probes, 1 epoch, {m['images']} + {m['eval_images']} images: separate live runs vs. one pass "
        f"| {m['separate_s']:.1f} s | {m['one_pass_s']:.1f} s | {m['ratio']:.1f}x |",
        f"| {g['probes']} learning rates of EP, {g['epochs']} epochs, {g['images']} cached images: {g['probes']} separate runs vs. "
        f"one grid run (1 thread) | {g['separate_s']:.1f} s | {g['grid_s']:.1f} s | {g['ratio']:.1f}x |",
        f"| the same grid vs. one single-probe run (1 thread) | {g['single_s']:.1f} s | {g['grid_s']:.1f} s "
        f"| {g['grid_vs_single']:.2f}x the time |",
        f"| of which the training steps' own arithmetic (forward, backward, AdamW; no Trainer) | "
        f"{g['single_compute_s']:.1f} s | {g['grid_compute_s']:.1f} s | {g['grid_compute_s'] / g['single_compute_s']:.1f}x |",
        f"| the same grid with the default rungs ({g['member_epochs']:g} of {g['member_epochs_without_rungs']:g} "
        f"member-epochs) vs. {g['probes']} separate runs | {g['separate_s']:.1f} s | {g['rungs_s']:.1f} s "
        f"| {g['rungs_ratio']:.1f}x |",
        f"| the grid with rungs vs. one single-probe run | {g['single_s']:.1f} s | {g['rungs_s']:.1f} s "
        f"| {g['rungs_vs_single']:.2f}x the time |",
        f"| EP forward+backward, B={e['batch']}, N={e['N']}, M={e['M']}, D={e['D']}: naive order vs. aggregate-first (1 thread) "
        f"| {e['naive_ms']:.1f} ms | {e['aggregate_first_ms']:.1f} ms | {e['ratio']:.1f}x |",
        f"| peak memory, 1 epoch from the cache, {mem['rows'][0]} vs. {mem['rows'][1]} rows "
        f"({mem['cache_mib'][0]:.0f} vs. {mem['cache_mib'][1]:.0f} MiB of shards) "
        f"| anon {mem['peak_anon_mib'][0]:.0f} MiB, RSS {mem['peak_rss_mib'][0]:.0f} MiB "
        f"| anon {mem['peak_anon_mib'][1]:.0f} MiB, RSS {mem['peak_rss_mib'][1]:.0f} MiB "
        f"| {mem['anon_growth_mib']:+.0f} MiB anon for +{mem['data_growth_mib']:.0f} MiB data |",
    ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke check of every benchmark")
    parser.add_argument("--output_dir", help="also write results.json and results.md here")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    hf_logging.set_verbosity_error()
    machine = f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} at start"
    print(machine, flush=True)

    config = ViTConfig(**sizes.backbone)
    torch.manual_seed(0)
    backbone = build_backbone(config).eval()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        results["ep_order"] = bench_ep_order(sizes)
        print(f"ep_order: {json.dumps(results['ep_order'])}", flush=True)
        results["cache"] = bench_cache(backbone, sizes, workdir)
        print(f"cache: {json.dumps(results['cache'])}", flush=True)
        results["multiprobe"] = bench_multiprobe(backbone, sizes, workdir)
        print(f"multiprobe: {json.dumps({k: v for k, v in results['multiprobe'].items() if k != 'table'})}", flush=True)
        results["lr_grid"] = bench_lr_grid(backbone, sizes, workdir)
        print(f"lr_grid: {json.dumps(results['lr_grid'])}", flush=True)
        results["memory"] = bench_memory(sizes, workdir)
        print(f"memory: {json.dumps(results['memory'])}", flush=True)
        results["extraction"] = bench_extraction(args.quick, workdir)
        print(f"extraction: {json.dumps(results['extraction'])}", flush=True)
    machine += f", {os.getloadavg()[0]:.1f} at the end"
    table = "\n".join([markdown(results, sizes, machine), *markdown_rows(results["extraction"])])
    print()
    print(table)
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=1))
        (out / "results.md").write_text(table + "\n")
    print(
        f"ratios: cache={results['cache']['ratio']:.1f}x multiprobe={results['multiprobe']['ratio']:.1f}x "
        f"ep_order={results['ep_order']['ratio']:.1f}x {ratios_line(results['extraction'])} "
        f"lr_grid={results['lr_grid']['ratio']:.1f}x lr_grid_rungs={results['lr_grid']['rungs_ratio']:.1f}x"
    )
    return results


if __name__ == "__main__":
    main()
