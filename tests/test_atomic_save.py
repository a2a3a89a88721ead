"""A save that fails part-way (a full disk, here a real file-size limit in a real subprocess) keeps the old probe."""

import os
import shutil
import signal
import subprocess
import sys

import torch

import hf_efficient_probing as hep

SAVE_WITH_A_FILE_SIZE_LIMIT = """
import resource, signal, sys, torch
import hf_efficient_probing as hep
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # exceed the limit -> OSError(EFBIG), like a full disk
model = hep.AutoModelForEfficientProbing.from_pretrained(sys.argv[1])
torch.nn.init.normal_(model.probe.classifier.weight)
resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
model.save_pretrained(sys.argv[1])
"""


def test_failed_save_leaves_the_previous_checkpoint_intact(saved_backbone, tmp_path):
    model = hep.ViTForEfficientProbing.from_backbone(saved_backbone("vit"), num_labels=3, num_queries=4)
    probe = tmp_path / "probe"
    model.save_pretrained(probe)
    before = {path.name: path.read_bytes() for path in probe.iterdir()}
    result = subprocess.run(
        [sys.executable, "-c", SAVE_WITH_A_FILE_SIZE_LIMIT, str(probe)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "File too large" in result.stderr
    after = {path.name: path.read_bytes() for path in probe.iterdir() if not path.name.startswith(".saving-")}
    assert after == before
    reloaded = hep.AutoModelForEfficientProbing.from_pretrained(probe)
    assert torch.equal(reloaded.probe.classifier.weight, model.probe.classifier.weight)


def test_saving_again_replaces_stale_shards(saved_backbone, tmp_path):
    model = hep.ViTForEfficientProbing.from_backbone(saved_backbone("vit"), num_labels=3, num_queries=4)
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "model.safetensors.index.json").write_text("{}")
    model.save_pretrained(tmp_path / "probe")
    assert sorted(p.name for p in (tmp_path / "probe").iterdir()) == ["config.json", "model.safetensors"]


def _snapshot(directory) -> dict[str, bytes]:
    return {str(path.relative_to(directory)): path.read_bytes() for path in directory.rglob("*") if path.is_file()}


def _save_killed_at(model, directory, call: int) -> int:
    """Save ``model`` in a forked process that SIGKILLs itself just before its ``call``-th file-system step
    (``os.replace``/``os.unlink``/``os.rmdir``, 1-based; 0: never). Returns the number of steps when not killed."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: count the steps, die at the chosen one
        os.close(read)
        steps = 0

        def step(real):
            def counted(*args, **kwargs):
                nonlocal steps
                steps += 1
                if steps == call:
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(*args, **kwargs)

            return counted

        os.replace, os.unlink, os.rmdir = step(os.replace), step(os.unlink), step(os.rmdir)
        try:
            model.save_pretrained(directory)
            os.write(write, str(steps).encode())
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        steps = pipe.read()
    if call:
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"step {call} was never reached"
    return int(steps or 0)


def test_a_save_killed_at_any_step_leaves_the_old_or_the_new_checkpoint(saved_backbone, tmp_path):
    """Old: a full checkpoint in shards; new: a probe-only one with other labels. Killed before each of the save's
    file-system steps (staging, marking it complete, deleting the old shards, every move, cleaning up), the
    directory then loads as exactly the old or exactly the new checkpoint, and keeps no staging folder."""
    backbone = saved_backbone("vit")
    torch.manual_seed(0)
    old = hep.ViTForEfficientProbing.from_backbone(backbone, num_labels=3, num_queries=4)
    new = hep.ViTForEfficientProbing.from_backbone(backbone, num_labels=5, num_queries=4)
    reference = tmp_path / "reference"
    old.save_pretrained(reference / "old", save_backbone=True, max_shard_size="40KB")
    expected = {"old": _snapshot(reference / "old")}
    assert len([name for name in expected["old"] if name.startswith("model-")]) > 1  # really sharded
    shutil.copytree(reference / "old", reference / "new")
    steps = _save_killed_at(new, reference / "new", call=0)
    expected["new"] = _snapshot(reference / "new")
    assert set(expected["new"]) == {"config.json", "model.safetensors"}
    assert steps >= 2 + len(expected["old"]), "every old file is deleted or replaced, one step each"
    outcomes = []
    for call in range(1, steps + 1):
        probe = tmp_path / f"killed-at-{call}"
        shutil.copytree(reference / "old", probe)
        _save_killed_at(new, probe, call)
        reloaded = hep.AutoModelForEfficientProbing.from_pretrained(probe)
        files = {name: data for name, data in _snapshot(probe).items() if not name.startswith(".saving-")}
        outcome = next((name for name, expected_files in expected.items() if files == expected_files), None)
        assert outcome, f"killed at step {call}: a mix of old and new files {sorted(files)}"
        source = old if outcome == "old" else new
        assert torch.equal(reloaded.probe.classifier.weight, source.probe.classifier.weight)
        outcomes.append(outcome)
        new.save_pretrained(probe)  # the next save
        assert not list(probe.glob(".saving-*")) and _snapshot(probe) == expected["new"]
    assert outcomes[0] == "old" and outcomes[-1] == "new"  # both phases were hit
