"""A save that fails part-way (a full disk, here a real file-size limit in a real subprocess) keeps the old probe."""

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
