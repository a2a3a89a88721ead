"""Two machines through ``accelerate launch --num_machines 2``, simulated on localhost (one CPU process each, gloo,
two launchers): the default protocol gets the one-process result, the cache on a root both share or, with
``--cache_per_node``, on each machine's own root."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_cache import all_rows, single_thread  # noqa: F401  (the launched processes' one thread)
from test_training_end_to_end import SCRIPT, _args, _env, _load_script, backbone_dir, image_folder  # noqa: F401

from hf_efficient_probing.cache import TokenCache
from hf_efficient_probing.cache.manifest import MANIFEST_NAME
from hf_efficient_probing.cache.ranks import RANK_TIMEOUT_ENV

# Probes that learn here (one process: EP 15/15, linear 10/15, both on layer 1 at the smaller rate), so that which
# one is chosen means something. Each machine trains on 4 images a step: the one process's global batch of 8.
SETTINGS = ("--probe", "linear", "ep", "--protocol", "default", "--num_train_epochs", "6", "--learning_rates",
            "0.3", "3", "--feature_layers", "1", "-1")  # fmt: skip
MACHINE = ("--ddp_backend", "gloo", "--per_device_train_batch_size", "4")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_machines(backbone, images, outputs: list[Path], roots: list[Path], *extra) -> None:
    """Machine r runs ``run_probing`` with ``--output_dir outputs[r] --token_cache_dir roots[r]``, as on a node of
    its own: one launcher per machine, rendezvous on the first one's port."""
    port = str(free_port())
    launchers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "accelerate.commands.launch",
                "--multi_gpu",
                "--num_machines",
                "2",
                "--machine_rank",
                str(rank),
                "--main_process_ip",
                "127.0.0.1",
                "--main_process_port",
                port,
                "--num_processes",
                "2",
                "--mixed_precision",
                "no",
                "--dynamo_backend",
                "no",
                str(SCRIPT),
                *_args(backbone, images, output, *SETTINGS, "--token_cache_dir", str(root), *extra),
            ],
            env={**_env(), RANK_TIMEOUT_ENV: "120"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for rank, (output, root) in enumerate(zip(outputs, roots, strict=True))
    ]
    try:
        logs = [launcher.communicate(timeout=240)[0] for launcher in launchers]
    finally:
        for launcher in launchers:
            if launcher.poll() is None:
                launcher.kill()
    for launcher, log in zip(launchers, logs, strict=True):
        assert launcher.returncode == 0, log[-4000:]


def results(output: Path) -> tuple[dict, dict]:
    """The chosen probe of each kind and every figure of ``all_results.json`` but the timings."""
    summary = json.loads((output / "run_summary.json").read_text())
    figures = json.loads((output / "all_results.json").read_text())
    timings = ("runtime", "per_second")
    return (
        {kind: chosen["name"] for kind, chosen in summary["chosen"].items()},
        {name: value for name, value in figures.items() if not any(word in name for word in timings)},
    )


def caches(root: Path) -> dict[str, TokenCache]:
    return {manifest.parent.name: TokenCache(manifest.parent) for manifest in root.glob(f"*/{MANIFEST_NAME}")}


@pytest.mark.slow
@pytest.mark.parametrize("placement", ["shared root", "cache per node"])
def test_two_machines_get_the_one_process_result(backbone_dir, image_folder, tmp_path, placement):  # noqa: F811
    """The same caches (fingerprints; per node: the same shards, byte for byte, on each machine), the same chosen
    probes and the same figures as one process."""
    one = tmp_path / "one"
    _load_script().main(_args(backbone_dir, image_folder, one, *SETTINGS, "--token_cache_dir", str(tmp_path / "c1")))
    single = caches(tmp_path / "c1")
    assert len(single) == 3, "train, selection and validation: one cache each"

    outputs = [tmp_path / "machine0", tmp_path / "machine1"]
    if placement == "shared root":
        roots = [tmp_path / "shared"] * 2
        launch_machines(backbone_dir, image_folder, outputs, roots)
    else:
        roots = [tmp_path / "node0", tmp_path / "node1"]
        launch_machines(backbone_dir, image_folder, outputs, roots, "--cache_per_node")
    summary = json.loads((outputs[0] / "run_summary.json").read_text())
    assert summary["world_size"] == 2
    for root in dict.fromkeys(roots):
        two = caches(root)
        assert two.keys() == single.keys(), "the same fingerprints"
        for name, cache in two.items():
            per_process = cache.manifest["extraction"]["images_per_process"]
            if placement == "shared root":
                assert len(per_process) == 2 and all(per_process), "both machines extract into the one cache"
                for mine, theirs in zip(all_rows(cache), all_rows(single[name]), strict=True):
                    assert torch.equal(mine, theirs)
            else:
                assert per_process == [cache.num_rows], "each machine extracts the whole set"
                assert cache.manifest["shards"] == single[name].manifest["shards"], "the same shards, byte for byte"
    (chosen, figures), (one_chosen, one_figures) = results(outputs[0]), results(one)
    assert chosen == one_chosen == {"linear": "linear_layer1_lr3.75e-02", "ep": "ep_layer1_lr3.75e-02"}
    assert figures == one_figures and figures["ep_eval_accuracy"] == 1.0
