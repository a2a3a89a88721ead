"""Publishing and loading probes through the real `huggingface_hub` and `transformers` clients, against the loopback
Hub-compatible server of ``hub_server.py`` (no network, no mocked upload or download function).

How the clients are pointed at the server, in process: ``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``
and ``HF_HUB_CACHE`` into ``huggingface_hub.constants`` when it is first imported (conftest.py has already imported it
offline by then), so the ``local_hub`` fixture patches those module attributes (``ENDPOINT``,
``HUGGINGFACE_CO_URL_TEMPLATE``, ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE``), which every client call reads at call time.
Two ``HfApi`` objects keep the endpoint they were made with and are handled too: ``huggingface_hub.hf_api.api``, behind
the module-level functions (``upload_file``, ``model_info``, ... and ``ModelCard.push_to_hub``), gets its ``endpoint``
patched, and ``transformers``' shared one (``transformers.utils.hub._hf_api``) is dropped so that it is rebuilt. Checked with huggingface_hub 2.4 and transformers 5.24. The same
variables are set in the environment for subprocesses. Offline mode is lifted inside these tests only: the server is
on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import re
import runpy
import shutil
from pathlib import Path

import huggingface_hub.hf_api
import pytest
import torch
import transformers.utils.hub
from conftest import tiny_backbone
from hub_server import LocalHubServer
from huggingface_hub import HfApi, ModelCard, constants, hf_hub_download
from huggingface_hub.errors import RepositoryNotFoundError
from PIL import Image
from safetensors import safe_open
from transformers import ViTImageProcessor, pipeline
from transformers.image_utils import IMAGENET_DEFAULT_MEAN

from hf_efficient_probing import AutoModelForEfficientProbing, ViTForEfficientProbing
from hf_efficient_probing.hub import (
    ProbeCardInfo,
    build_model_card,
    push_probe_to_hub,
    save_probe_repository,
)

EXAMPLES = Path(__file__).parent.parent / "examples"

BACKBONE = "tester/tiny-vit"
CARD_INFO = ProbeCardInfo(
    dataset="tester/tiny-shapes",
    dataset_name="Tiny Shapes",
    top1=62.5,
    top5=100.0,
    best_epoch=3,
    training={"optimizer": "LARS", "base learning rate": 0.1, "epochs": 4},
)


LFS_THRESHOLD = 4096  # bytes: weights and figures go through LFS, configs and cards inline (as on the Hub)


@pytest.fixture
def local_hub(tmp_path, monkeypatch):
    """A Hub-compatible server on loopback, with every client pointed at it and a fresh cache."""
    with LocalHubServer(tmp_path / "hub", lfs_threshold=LFS_THRESHOLD) as server:
        cache = tmp_path / "cache"
        for name, value in {
            "ENDPOINT": server.endpoint,
            "HUGGINGFACE_CO_URL_TEMPLATE": server.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_HUB_OFFLINE": False,
            "HF_HUB_CACHE": str(cache),
            "HF_HUB_DISABLE_XET": True,  # large files take the LFS path, which the loopback Hub serves
        }.items():
            monkeypatch.setattr(constants, name, value)
        monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", server.endpoint)
        monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)
        for name, value in {
            "HF_ENDPOINT": server.endpoint,
            "HF_HUB_OFFLINE": "0",
            "HF_HUB_CACHE": str(cache),
            "HF_TOKEN": "hf_loopback_test_token",
            "HF_HUB_DISABLE_XET": "1",
        }.items():
            monkeypatch.setenv(name, value)
        server.cache = cache
        yield server


def push_backbone(revision_seed: int | None = None):
    """Put a tiny ViT, its image processor and a card with a licence in the loopback Hub; optionally a branch
    ``other`` holding different weights."""
    api = HfApi()
    api.create_repo(BACKBONE, exist_ok=True)
    tiny_backbone("vit").push_to_hub(BACKBONE)
    ViTImageProcessor(size={"height": 32, "width": 32}).push_to_hub(BACKBONE)
    ModelCard("---\nlicense: apache-2.0\n---\n# tiny ViT\n").push_to_hub(BACKBONE)
    if revision_seed is not None:
        api.create_branch(BACKBONE, branch="other")
        tiny_backbone("vit", seed=revision_seed).push_to_hub(BACKBONE, revision="other")


def images(count: int = 8, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, 32, 32, generator=generator)


def trained_probe(**hub_kwargs) -> ViTForEfficientProbing:
    """An EP probe on the Hub backbone, trained a few steps so that its weights and BatchNorm statistics differ from
    their initial values."""
    torch.manual_seed(0)
    model = AutoModelForEfficientProbing.from_backbone(
        BACKBONE, probe="ep", num_queries=4, num_labels=3, id2label={0: "circle", 1: "square", 2: "star"}, **hub_kwargs
    )
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    for step in range(3):
        loss = model(pixel_values=images(seed=step), labels=torch.arange(8) % 3).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def example_image() -> Image.Image:
    return Image.fromarray((torch.rand(40, 48, 3, generator=torch.Generator().manual_seed(3)) * 255).byte().numpy())


def test_round_trip_push_clear_cache_load(local_hub, tmp_path):
    """Push (the weights through the LFS upload path), clear the cache, load from the Hub: the same probe."""
    push_backbone()
    model = trained_probe()
    model.push_to_hub("tiny-probe", private=True, card_info=CARD_INFO, example_image=example_image())
    repo = "tester/tiny-probe"

    shutil.rmtree(local_hub.cache)
    loaded = AutoModelForEfficientProbing.from_pretrained(repo)
    assert isinstance(loaded, ViTForEfficientProbing)
    assert (local_hub.cache / "models--tester--tiny-vit").is_dir(), "the backbone was not downloaded from the Hub"
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values=images(seed=9)).logits, model(pixel_values=images(seed=9)).logits)

    files = set(HfApi().list_repo_files(repo))
    assert files == {"config.json", "model.safetensors", "README.md", "preprocessor_config.json", "attention_maps.png"}
    local_weights = tmp_path / "probe-weights"
    model.save_pretrained(local_weights)
    probe_bytes = (local_weights / "model.safetensors").read_bytes()
    assert len(probe_bytes) >= LFS_THRESHOLD and hashlib.sha256(probe_bytes).hexdigest() in local_hub.lfs_uploads
    weights = hf_hub_download(repo, "model.safetensors")
    with safe_open(weights, framework="pt") as checkpoint:
        keys = list(checkpoint.keys())
    assert keys and all(key.startswith("probe.") for key in keys)
    backbone_weights = hf_hub_download(BACKBONE, "model.safetensors")
    assert (
        local_hub.cache.joinpath(weights).stat().st_size * 5 < local_hub.cache.joinpath(backbone_weights).stat().st_size
    )
    config = json.loads(open(hf_hub_download(repo, "config.json")).read())
    assert config["backbone_name_or_path"] == BACKBONE

    assert local_hub.state.repos[repo].private
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info(repo)


def test_card_metadata_on_the_hub(local_hub):
    push_backbone()
    push_probe_to_hub(trained_probe(), "tester/card-probe", card_info=CARD_INFO)
    card = ModelCard.load("tester/card-probe")
    data = card.data
    assert data.library_name == "hf-efficient-probing"
    assert data.base_model == BACKBONE
    assert data.license == "apache-2.0", "the licence is taken from the backbone's card"
    assert data.pipeline_tag == "image-classification"
    assert data.datasets == [CARD_INFO.dataset]
    assert {"image-classification", "attentive-probing"} <= set(data.tags)
    results = {result.metric_name: result for result in data.eval_results}
    assert results["Top-1 Accuracy"].metric_value == CARD_INFO.top1
    assert results["Top-5 Accuracy"].metric_value == CARD_INFO.top5
    assert all(r.dataset_type == CARD_INFO.dataset and r.dataset_split == "validation" for r in data.eval_results)
    text = card.text
    assert f"epoch **{CARD_INFO.best_epoch}**" in text
    assert "| optimizer | LARS |" in text
    assert f"{sum(p.numel() for p in trained_probe().probe.parameters()):,}" in text
    assert "attention_maps.png" in text, "without an example image the figure is drawn on the sample image"
    assert "attention_maps.png" in HfApi().list_repo_files("tester/card-probe")
    assert not HfApi().model_info("tester/card-probe").private


def test_card_passes_metadata_validation_and_round_trips(local_hub):
    push_backbone()
    card = build_model_card(trained_probe(), "tester/some-probe", CARD_INFO)
    card.validate()  # the server's /api/validate-yaml
    reparsed = ModelCard(str(card))  # huggingface_hub parses the model-index back into EvalResults
    assert reparsed.data.to_dict() == card.data.to_dict()
    assert [r.metric_value for r in reparsed.data.eval_results] == [CARD_INFO.top1, CARD_INFO.top5]


def test_malformed_metadata_fails_validation(local_hub):
    """The client posts a README's metadata for validation before committing it; the server must refuse a broken
    model-index (so that `test_card_passes_metadata_validation_and_round_trips` means something)."""
    api = HfApi()
    api.create_repo("tester/broken")
    text = "---\nmodel-index:\n- name: probe\n  results:\n  - task: {}\n    metrics: []\n---\n# card\n"
    with pytest.raises(ValueError, match="task.type"):
        api.upload_file(path_or_fileobj=text.encode(), path_in_repo="README.md", repo_id="tester/broken")


def test_card_snippets_run_as_written(local_hub, tmp_path, monkeypatch):
    push_backbone()
    model = trained_probe()
    push_probe_to_hub(model, "tester/snippet-probe", card_info=CARD_INFO)
    snippets = re.findall(r"```python\n(.*?)```", ModelCard.load("tester/snippet-probe").text, flags=re.S)
    assert len(snippets) == 2
    example_image().save(tmp_path / "image.jpg")
    monkeypatch.chdir(tmp_path)
    for snippet in snippets:
        exec(compile(snippet, "model card", "exec"), {})


def test_pipeline_classifies_with_a_hub_probe(local_hub):
    push_backbone()
    model = trained_probe()
    push_probe_to_hub(model, "tester/pipe-probe")
    classifier = pipeline("image-classification", model="tester/pipe-probe")
    image = example_image()
    pixel_values = ViTImageProcessor(size={"height": 32, "width": 32})(image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = model(pixel_values=pixel_values).logits.softmax(-1)[0]
    top = classifier(image, top_k=1)[0]
    assert top["label"] == model.config.id2label[int(expected.argmax())]
    assert top["score"] == pytest.approx(float(expected.max()), abs=1e-6)


def test_revisions_of_probe_and_backbone_are_respected(local_hub, tmp_path):
    push_backbone(revision_seed=7)
    model = trained_probe(revision="other")
    assert model.config.backbone_revision == "other"
    model.push_to_hub("tester/branch-probe", revision="v1")
    assert "model.safetensors" not in HfApi().list_repo_files("tester/branch-probe")  # main stays empty

    shutil.rmtree(local_hub.cache)
    cache_dir = tmp_path / "own-cache"
    loaded = AutoModelForEfficientProbing.from_pretrained("tester/branch-probe", revision="v1", cache_dir=cache_dir)
    assert {p.name for p in cache_dir.glob("models--*")} == {"models--tester--branch-probe", "models--tester--tiny-vit"}
    assert not local_hub.cache.exists(), "cache_dir was not used for the probe or its backbone"
    expected_backbone = tiny_backbone("vit", seed=7).state_dict()
    assert all(torch.equal(value, expected_backbone[key]) for key, value in loaded.backbone.state_dict().items())
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values=images()).logits, model(pixel_values=images()).logits)
    card = ModelCard.load(hf_hub_download("tester/branch-probe", "README.md", revision="v1"))
    assert 'from_pretrained("tester/branch-probe", revision="v1")' in card.text


def test_training_run_is_published_with_its_results(local_hub, tmp_path):
    push_backbone()
    output_dir = tmp_path / "run"
    model = trained_probe()
    model.save_pretrained(output_dir)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(output_dir)
    summary = {
        "dataset": "tester/tiny-shapes",
        "eval_accuracy": 0.625,
        "eval_top5_accuracy": 1.0,
        "best_epoch": 3,
        "optimizer": "lars",
        "peak_learning_rate": 0.05,
        "effective_batch_size": 8,
        "epochs": 4,
        "seed": 0,
    }
    (output_dir / "run_summary.json").write_text(json.dumps(summary))
    AutoModelForEfficientProbing.from_pretrained(output_dir).push_to_hub(
        "tester/run-probe", run_dir=output_dir, example_image=example_image(), private=True
    )
    data = ModelCard.load("tester/run-probe").data
    assert [r.metric_value for r in data.eval_results] == [62.5, 100.0]
    assert data.datasets == ["tester/tiny-shapes"]
    assert "attention_maps.png" in HfApi().list_repo_files("tester/run-probe")
    assert local_hub.state.repos["tester/run-probe"].private


def test_training_script_pushes_with_the_run_results(local_hub, tmp_path):
    push_backbone()
    for split in ("train", "validation"):
        for label in ("a", "b"):
            folder = tmp_path / "shapes" / split / label
            folder.mkdir(parents=True)
            for index in range(4):
                example_image().rotate(30 * index + 90 * (label == "b")).save(folder / f"{index}.png")
    run_probing = runpy.run_path(str(EXAMPLES / "run_probing.py"))["main"]
    run_probing(
        [
            "--model_name_or_path",
            BACKBONE,
            "--dataset_name",
            str(tmp_path / "shapes"),
            "--output_dir",
            str(tmp_path / "out"),
            "--probe",
            "ep",
            "--num_queries",
            "4",
            "--num_train_epochs",
            "1",
            "--per_device_train_batch_size",
            "4",
            "--push_to_hub",
            "--hub_model_id",
            "tester/trained",
            "--hub_private_repo",
            "true",
        ]
    )
    summary = json.loads((tmp_path / "out" / "all_results.json").read_text())  # the kept probe's evaluation
    data = ModelCard.load("tester/trained").data
    assert data.eval_results[0].metric_value == pytest.approx(100 * summary["eval_accuracy"], abs=0.01)
    assert data.eval_results[0].dataset_type == "shapes" and data.datasets is None  # a local folder is no Hub data set
    assert "attention_maps.png" in HfApi().list_repo_files("tester/trained")
    assert local_hub.state.repos["tester/trained"].private


def test_examples_attach_publish_and_classify(local_hub, tmp_path):
    push_backbone()
    example_image().save(tmp_path / "image.png")
    attach = runpy.run_path(str(EXAMPLES / "attach_probe.py"))["main"]
    attach(["--backbone", BACKBONE, "--num_labels", "3", "--image", str(tmp_path / "image.png"), "--push", "tester/ex"])
    classify = runpy.run_path(str(EXAMPLES / "classify_with_hub_probe.py"))["main"]
    predictions = classify(
        ["--model", "tester/ex", "--image", str(tmp_path / "image.png"), "--maps", str(tmp_path / "m.png")]
    )
    assert len(predictions) == 3 and (tmp_path / "m.png").is_file()


def test_results_need_their_dataset():
    with pytest.raises(ValueError, match="dataset"):
        ProbeCardInfo(top1=80.0)
    with pytest.raises(ValueError, match="percentage"):
        ProbeCardInfo(dataset="d", top1=0.8 * 200)


def test_probe_repository_must_name_its_backbone(tmp_path):
    model = ViTForEfficientProbing.from_backbone(tiny_backbone("vit"), num_queries=4, num_labels=3)
    assert model.config.backbone_name_or_path is None
    with pytest.raises(ValueError, match="backbone_name_or_path"):
        push_probe_to_hub(model, "tester/nameless")


def test_local_backbone_without_processor_or_card(tmp_path, saved_backbone):
    """A backbone that ships no image processor: the repository gets one built from the backbone's config (with a
    warning saying so), the figure is drawn on the sample image, and `pipeline` runs the probe from the folder."""
    model = AutoModelForEfficientProbing.from_backbone(saved_backbone("vit"), probe="ep", num_queries=4, num_labels=3)
    with pytest.warns(UserWarning, match="has no image processor.*built from its config"):
        save_probe_repository(model, tmp_path / "repo", "user/local-probe")
    assert {p.name for p in (tmp_path / "repo").iterdir()} == {
        "config.json", "model.safetensors", "README.md", "preprocessor_config.json", "attention_maps.png"
    }  # fmt: skip
    data = ModelCard.load(tmp_path / "repo" / "README.md").data
    assert data.base_model is None and data.license is None  # a local path is no Hub model; no card, no licence
    processor = ViTImageProcessor.from_pretrained(tmp_path / "repo")
    assert (processor.size["height"], processor.size["width"]) == (32, 32)
    assert tuple(processor.image_mean) == tuple(IMAGENET_DEFAULT_MEAN)
    classifier = pipeline("image-classification", model=str(tmp_path / "repo"))
    image = example_image()
    with torch.no_grad():
        expected = model(**processor(image, return_tensors="pt")).logits.softmax(-1)[0]
    assert classifier(image, top_k=1)[0]["score"] == pytest.approx(float(expected.max()), abs=1e-6)
