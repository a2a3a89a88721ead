"""Weights come only from safetensors (or weights-only torch.load for official heads); bad files fail cleanly."""

import json
import pickle
import shutil
import zipfile

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from test_cache import extract, single_thread  # noqa: F401

import hf_efficient_probing as hep
from hf_efficient_probing.cache import TokenCache
from hf_efficient_probing.cache.manifest import MANIFEST_NAME, sha256_file
from hf_efficient_probing.demo import embedded_training_arguments
from hf_efficient_probing.official import conversion
from hf_efficient_probing.official.conversion import load_official_head
from hf_efficient_probing.training import train_probe
from hf_efficient_probing.training.recipes import resolve_recipe

CLEAN_ERRORS = (ValueError, OSError, SafetensorError, RuntimeError)


@pytest.fixture
def probe_dir(saved_backbone, tmp_path):
    model = hep.ViTForEfficientProbing.from_backbone(saved_backbone("vit"), num_labels=3, num_queries=4)
    model.save_pretrained(tmp_path / "probe")
    return tmp_path / "probe"


def test_pickle_only_repository_is_refused(probe_dir):
    weights = probe_dir / "model.safetensors"
    torch.save({"probe.classifier.weight": torch.zeros(3, 32)}, probe_dir / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(OSError, match="only pickle weights.*safetensors only"):
        hep.AutoModelForEfficientProbing.from_pretrained(probe_dir)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_malformed_safetensors_fail_cleanly(probe_dir, tmp_path_factory, data):
    """Truncated, header-flipped or random bytes fail with a clear error; a byte flipped inside a tensor's data is
    a valid file, and loads with exactly the flipped value."""
    original = (probe_dir / "model.safetensors").read_bytes()
    data_start = 8 + int.from_bytes(original[:8], "little")  # after the length prefix and the JSON header
    target = tmp_path_factory.mktemp("fuzzed")
    shutil.copy(probe_dir / "config.json", target / "config.json")
    mode = data.draw(st.sampled_from(["truncate", "flip header", "flip data", "random"]))
    if mode == "truncate":
        blob = original[: data.draw(st.integers(0, len(original) - 1))]
    elif mode.startswith("flip"):
        span = (0, data_start - 1) if mode == "flip header" else (data_start, len(original) - 1)
        position = data.draw(st.integers(*span))
        blob = (
            original[:position]
            + bytes([original[position] ^ data.draw(st.integers(1, 255))])
            + original[position + 1 :]
        )
    else:
        blob = data.draw(st.binary(max_size=512))
    (target / "model.safetensors").write_bytes(blob)
    try:
        model = hep.AutoModelForEfficientProbing.from_pretrained(target)
    except CLEAN_ERRORS:
        assert mode != "flip data", "a flipped value inside a tensor is a valid file"
        return
    assert mode.startswith("flip"), f"{mode} bytes loaded as a probe"
    on_disk = safetensors_load(blob)
    loaded = model.state_dict()
    for key, value in on_disk.items():  # bit for bit (a flipped float may be NaN)
        assert torch.equal(loaded[key].flatten().view(torch.uint8), value.flatten().view(torch.uint8)), key


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=2048))
def test_malformed_official_checkpoints_fail_cleanly(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("official") / "ep_head.pth"
    path.write_bytes(blob)
    with pytest.raises(ValueError):
        load_official_head(path, pooling="ep")


@pytest.fixture(scope="module")
def released_head_members(tmp_path_factory) -> list[tuple[str, bytes]]:
    """The zip members of a valid released-format ``ep_head.pth`` (pickle + tensor storages)."""
    torch.manual_seed(0)
    state_dict = {"0.cls_token": torch.randn(1, 4, 32), "0.v.weight": torch.randn(32, 32)}
    state_dict |= {
        "1.running_mean": torch.zeros(32),
        "1.running_var": torch.ones(32),
        "1.num_batches_tracked": torch.tensor(0),
    }
    state_dict |= {"2.weight": torch.randn(3, 32), "2.bias": torch.zeros(3)}
    path = tmp_path_factory.mktemp("released") / "ep_head.pth"
    torch.save({"state_dict": state_dict, "meta": {"cls_features": "ep", "ep_queries": 4, "d_out": 1}}, path)
    assert load_official_head(path).pooling.queries.shape == (1, 4, 32)
    with zipfile.ZipFile(path) as archive:
        return [(name, archive.read(name)) for name in archive.namelist()]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_official_checkpoints_fail_cleanly_and_run_no_code(released_head_members, tmp_path_factory, data):
    """A structurally valid torch zip whose pickle or storages are mutated, or whose pickle carries a payload (alone
    or in place of a tensor): a clear error or a loaded head, never another exception, never code run."""
    folder = tmp_path_factory.mktemp("mutated")
    sentinel = folder / "payload-ran"
    members = dict(released_head_members)
    pickle_name = next(name for name in members if name.endswith("data.pkl"))
    mode = data.draw(st.sampled_from(["pickle byte", "storage byte", "payload", "payload inside", "drop member"]))
    if mode in ("pickle byte", "storage byte"):
        name = (
            pickle_name if mode == "pickle byte" else data.draw(st.sampled_from(sorted(set(members) - {pickle_name})))
        )
        content = members[name]
        position = data.draw(st.integers(0, len(content) - 1))
        members[name] = (
            content[:position] + bytes([content[position] ^ data.draw(st.integers(1, 255))]) + content[position + 1 :]
        )
    elif mode == "payload":
        members[pickle_name] = pickle.dumps(Payload(sentinel), protocol=data.draw(st.integers(2, 5)))
    elif mode == "payload inside":  # the payload's opcodes spliced in before the pickle's final STOP
        payload = pickle.dumps(Payload(sentinel), protocol=2)[2:-1]  # without PROTO and STOP
        members[pickle_name] = members[pickle_name][:-1] + payload + b"0" + b"."  # POP it, then STOP
    else:
        del members[data.draw(st.sampled_from(sorted(members)))]
    path = folder / "ep_head.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    try:
        load_official_head(path)
    except ValueError:
        pass
    assert not sentinel.exists(), f"{mode}: unpickling ran the payload"


# ---------------------------------------------------------------------------------------------------------------
# Files with a code-running payload beside valid files, on every load path: never unpickled.


class Payload:
    """Unpickling this writes the sentinel file: proof that a loader ran code from the file."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return exec, (f"open({self.sentinel!r}, 'w').write('code ran')",)


@pytest.fixture
def sentinel(tmp_path):
    path = tmp_path / "payload-ran"
    pickle.loads(pickle.dumps(Payload(path)))  # the payload is live: plain unpickling runs it
    assert path.exists()
    path.unlink()
    yield path
    assert not path.exists(), "a loader unpickled a file with a payload (it ran code)"


def plant(path, sentinel) -> None:
    """A torch-format file (zip + pickle) whose pickle carries the payload next to real tensors."""
    torch.save({"state_dict": {"weight": torch.zeros(2)}, "payload": Payload(sentinel)}, path)


def test_from_pretrained_ignores_pickles_beside_the_safetensors(probe_dir, sentinel):
    for name in ("pytorch_model.bin", "training_args.bin", "optimizer.pt", "rng_state.pth"):
        plant(probe_dir / name, sentinel)
    model = hep.AutoModelForEfficientProbing.from_pretrained(probe_dir)
    assert model.probe.classifier.weight.shape == (3, 32)


def test_official_head_and_conversion_command_refuse_a_payload(saved_backbone, tmp_path, sentinel):
    plant(tmp_path / "ep_head.pth", sentinel)
    with pytest.raises(ValueError, match="refuses"):
        load_official_head(tmp_path / "ep_head.pth", pooling="ep")
    with pytest.raises(ValueError, match="refuses"):
        conversion.main([str(tmp_path / "ep_head.pth"), "--backbone", saved_backbone("vit"), "--output", "x"])
    assert not (tmp_path / "x").exists()


def test_token_cache_refuses_a_pickled_shard_and_ignores_pickles_beside(tmp_path, sentinel):
    cache = extract(tmp_path)
    plant(cache.directory / "tokens.pt", sentinel)
    shard = cache.directory / cache.shards[0].file
    plant(shard, sentinel)  # a shard replaced by a pickle, the manifest updated to match it
    manifest = json.loads((cache.directory / MANIFEST_NAME).read_text())
    manifest["shards"][0].update(bytes=shard.stat().st_size, sha256=sha256_file(shard))
    (cache.directory / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(SafetensorError, match="header"):  # read as safetensors only
        TokenCache(cache.directory).dataset()[0]


def test_resuming_refuses_pickled_trainer_state_with_a_payload(saved_backbone, tmp_path, sentinel):
    """Trainer checkpoints hold pickles (optimizer, scheduler, RNG states): resume reads each of them weights-only
    (planted one at a time: the first refused file would hide a later loader that unpickles)."""
    torch.manual_seed(0)
    items = [{"tokens": torch.randn(17, 32), "labels": i % 3} for i in range(8)]

    def train(output):
        model = hep.ViTForEfficientProbing.from_backbone(saved_backbone("vit"), num_labels=3)
        args = embedded_training_arguments(
            str(output), num_train_epochs=2, per_device_train_batch_size=4, warmup_epochs=0, keep_checkpoints=True
        )
        return train_probe(model, resolve_recipe(args, "paper", len(items)), items, items)

    train(tmp_path / "run")
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        output = tmp_path / f"planted-{name}"
        shutil.copytree(tmp_path / "run", output)
        shutil.rmtree(output / "checkpoint-4")  # as if killed after the first epoch
        assert (output / "checkpoint-2" / name).exists()
        plant(output / "checkpoint-2" / name, sentinel)
        with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
            train(output)  # resumes from checkpoint-2
