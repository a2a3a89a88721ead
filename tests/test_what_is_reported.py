"""What a run reports is what a user gets.

The probes a run saves reproduce its figures from the files alone (through ``from_pretrained`` and ``pipeline``), its
choices are the best of what it recorded, a shared token cache never serves another run's columns or labels, a run
resumes only a checkpoint of itself, and a probe used through ``pipeline`` sees an image as the run measured it,
whatever the backbone's own image processor does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features
from datasets import Image as ImageFeature
from PIL import Image
from test_cache import single_thread  # noqa: F401
from test_training_end_to_end import _load_script
from transformers import AutoImageProcessor, BitImageProcessor, ViTImageProcessor, pipeline

from hf_efficient_probing import AutoModelForEfficientProbing  # (importing it registers the probes for pipeline)
from hf_efficient_probing.hub import build_model_card, card_info_from_summary
from hf_efficient_probing.training import DataArguments, load_image_dataset, prepare_data
from hf_efficient_probing.training.resume import RunMismatchError
from hf_efficient_probing.training.selection import indices_fingerprint, selection_mask

CLASSES = ["left", "none", "right"]  # image folders sort their class names


def make_images(root: Path, width: int = 40, height: int = 32, per_class=(("train", 8), ("validation", 5))) -> str:
    """3 classes: a bright bar near the left edge, near the right edge, or none; non-square, so that a processor
    that squashes and one that crops see different pixels."""
    rng = np.random.default_rng(0)
    for split, count in per_class:
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 60, (height, width, 3)).astype(np.uint8)
                if name != "none":
                    column = 4 if name == "left" else width - 12
                    pixels[6:26, column : column + 8] = 230
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return str(root)


@pytest.fixture
def images(tmp_path) -> str:
    return make_images(tmp_path / "images")


def backbone_with(saved_backbone, processor) -> str:
    path = saved_backbone("vit")
    processor.save_pretrained(path)
    return path


SQUASH = ViTImageProcessor(size={"height": 32, "width": 32})  # the whole image, resized to the input
CROP = BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})  # shorter side, then crop


def command_line(
    backbone: str, data: str, output: Path, *extra: str, probes=("ep", "linear"), paper=False
) -> list[str]:
    """A small run's command line: the default protocol (or, with ``paper``, the paper's) on a tiny ViT."""
    shapes = ["--num_queries", "4"] if "ep" in probes else []
    protocol = (
        ["--protocol", "paper", "--base_learning_rate", "1.0"]
        if paper
        else ["--learning_rates", "1e-2", "1e-1", "--selection_fraction", "0.25", "--backbone_dtype", "float32"]
    )
    return [
        "--model_name_or_path", backbone, "--dataset_name", data, "--output_dir", str(output),
        "--probe", *probes, *shapes, *protocol, "--num_train_epochs", "3", "--per_device_eval_batch_size", "16",
        "--use_cpu", "--disable_tqdm", "true", "--dataloader_num_workers", "0", *extra,
    ]  # fmt: skip


def files_of(data: str, split: str, rows=None) -> list[tuple[str, str]]:
    """``(path, class name)`` of a split's images, in the data set's order (or of the given rows)."""
    dataset, image_column, label_column = load_image_dataset(data)
    table = dataset[split].cast_column(image_column, ImageFeature(decode=False))
    rows = range(len(table)) if rows is None else rows
    return [(table[int(row)][image_column]["path"], CLASSES[table[int(row)][label_column]]) for row in rows]


def pipeline_accuracy(model_dir: Path, files: list[tuple[str, str]]) -> float:
    classify = pipeline("image-classification", model=str(model_dir), device="cpu")
    hits = [classify(path, top_k=1)[0]["label"] == label for path, label in files]
    return sum(hits) / len(hits)


def selection_files(data: str, summary: dict) -> list[tuple[str, str]]:
    """The held-out selection split, re-drawn from the rule the summary records and checked against its rows."""
    dataset, _, label_column = load_image_dataset(data)
    labels = np.asarray(dataset["train"][label_column])
    record = summary["selection_split"]
    held = np.flatnonzero(selection_mask(labels, record["fraction"], record["seed"]))
    assert indices_fingerprint(held) == record["rows_fingerprint"] and len(held) == record["rows"]
    return files_of(data, "train", held)


def test_every_saved_probe_reproduces_the_figures_its_run_reported(saved_backbone, images, tmp_path):
    """The default protocol from the token cache: each chosen probe, reloaded from its folder and run through
    ``pipeline`` on the image files, gives the selection and evaluation accuracy of ``all_results.json`` and
    ``run_summary.json``; each choice (member, epoch, k-NN's k and T) is the best of the figures the run recorded.
    (Cached tokens are stored in float16: a logit that close to a tie could flip one image, so one is allowed.)"""
    backbone = backbone_with(saved_backbone, SQUASH)
    output = tmp_path / "run"
    knn = ["--knn_eval", "--knn_features", "gap", "--knn_k", "1", "3", "--knn_temperatures", "0.07", "1.0"]
    _load_script().main(command_line(backbone, images, output, *knn))
    summary = json.loads((output / "run_summary.json").read_text())
    evaluation, selection = files_of(images, "validation"), selection_files(images, summary)
    for kind in ("ep", "linear"):
        results = json.loads((output / kind / "all_results.json").read_text())
        chosen = summary["chosen"][kind]
        for figure in ("eval_accuracy", "eval_top5_accuracy"):  # each figure beside its interval over the images
            low, high = results[f"{figure}_interval"]
            assert low <= results[figure] <= high and chosen[f"{figure}_interval"] == [low, high]
        for figure, files in (("eval_accuracy", evaluation), ("selection_accuracy", selection)):
            assert results[figure] == chosen[figure]
            assert pipeline_accuracy(output / kind, files) == pytest.approx(results[figure], abs=1.01 / len(files))
        members = [m for m in summary["members"] if m["kind"] == kind]
        best = max(members, key=lambda m: m["selection_accuracy"])  # the first of equals: the grid's order
        assert chosen["name"] == best["name"] and chosen["selection_accuracy"] == best["selection_accuracy"]
        curve = best["per_epoch"]
        earliest_best = max(curve, key=lambda point: point["selection_accuracy"])
        assert chosen["best_epoch"] == earliest_best["epoch"]
    knn_results = json.loads((output / "knn_results.json").read_text())
    best_pair = max(knn_results["selection_sweep"], key=lambda row: row["top1"])
    assert knn_results["chosen"] == best_pair


def test_every_member_of_a_sweep_reproduces_its_row(saved_backbone, images, tmp_path):
    backbone = backbone_with(saved_backbone, CROP)
    output = tmp_path / "sweep"
    from hf_efficient_probing.cli import sweep

    sweep(
        ["--model_name_or_path", backbone, "--dataset_name", images, "--output_dir", str(output),
         "--num_queries", "4", "--linear_features", "gap", "--num_train_epochs", "2", "--backbone_dtype", "float32",
         "--use_cpu", "--use_token_cache", "--selection_fraction", "0.25"]
    )  # fmt: skip
    evaluation = files_of(images, "validation")
    rows = json.loads((output / "results.json").read_text())
    assert len(rows) == 2
    for row in rows:
        assert pipeline_accuracy(Path(row["path"]), evaluation) == pytest.approx(row["eval_accuracy"], abs=1.01 / 15)


@pytest.mark.parametrize("processor", [SQUASH, CROP], ids=["squashes", "crops"])
def test_pipeline_sees_an_image_as_the_run_measured_it(processor, saved_backbone, images, tmp_path):
    """Whatever the backbone's own processor does, the processor saved beside the probe is the run's evaluation
    preprocessing: the same pixels for every evaluation image, and the run's accuracy through ``pipeline``."""
    backbone = backbone_with(saved_backbone, processor)
    output = tmp_path / "run"
    _load_script().main(command_line(backbone, images, output, "--use_token_cache", "false", probes=("linear",)))
    saved = AutoImageProcessor.from_pretrained(output)
    data = prepare_data(DataArguments(dataset_name=images), processor)  # what the run prepared
    measured = data.images("validation")
    for index, (path, _) in enumerate(files_of(images, "validation")):
        pixels = saved(Image.open(path).convert("RGB"), return_tensors="pt")["pixel_values"][0]
        torch.testing.assert_close(pixels, measured[index]["pixel_values"], rtol=0, atol=0)
    results = json.loads((output / "all_results.json").read_text())
    assert pipeline_accuracy(output, files_of(images, "validation")) == pytest.approx(results["eval_accuracy"])


def two_column_dataset(root: Path) -> str:
    """A ``save_to_disk`` data set with two image columns and two label columns (the second labels are another
    class of the same image), as a data set with coarse and fine labels has."""
    folder = make_images(root / "folder", width=32)
    dataset, image_column, label_column = load_image_dataset(folder)
    features = Features(
        {
            "image": ImageFeature(),
            "image2": ImageFeature(),
            "label": ClassLabel(names=CLASSES),
            "label2": ClassLabel(names=CLASSES),
        }
    )
    splits = {}
    for split, rows in dataset.items():
        labels = rows[label_column]
        flipped = [image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for image in rows[image_column]]
        splits[split] = Dataset.from_dict(
            {
                "image": rows[image_column],
                "image2": flipped,
                "label": labels,
                "label2": [(label + 1) % 3 for label in labels],
            },
            features=features,
        )
    DatasetDict(splits).save_to_disk(root / "disk")
    return str(root / "disk")


def test_a_shared_cache_home_serves_each_run_its_own_columns_and_labels(saved_backbone, tmp_path):
    """Runs on another label column and on another image column of the same data set fill the same cache home;
    the run on the first columns then reports what it reports with a fresh cache home."""
    data, backbone = two_column_dataset(tmp_path / "data"), backbone_with(saved_backbone, SQUASH)
    shared, fresh = tmp_path / "shared-cache", tmp_path / "fresh-cache"

    def run(name, cache, *columns):
        argv = command_line(backbone, data, tmp_path / name, "--token_cache_dir", str(cache), probes=("linear",))
        _load_script().main([*argv, "--image_column_name", "image", "--label_column_name", "label", *columns])
        return json.loads((tmp_path / name / "all_results.json").read_text())

    run("second-labels", shared, "--label_column_name", "label2")
    run("second-images", shared, "--image_column_name", "image2")
    after_others, alone = run("first", shared), run("first-fresh", fresh)
    assert after_others["eval_accuracy"] == alone["eval_accuracy"]
    assert after_others["selection_accuracy"] == alone["selection_accuracy"]
    assert len(list(shared.iterdir())) == 3 * 3, "one cache per split and per column choice"


IDENTITY_CHANGES = {
    "dataset": lambda run: run.update(data="other"),
    "backbone": lambda run: run.update(backbone="other"),
    "subset_seed": lambda run: run["extra"].extend(["--subset_seed", "1"]),
    "selection_fraction": lambda run: run["extra"].extend(["--selection_fraction", "0.4"]),
    "linear_features": lambda run: run["extra"].extend(["--linear_features", "gap"]),
    "token_selection": lambda run: run["extra"].extend(["--token_selection", "all"]),
    "use_token_cache": lambda run: run["extra"].extend(["--use_token_cache", "false"]),
    "learning_rates": lambda run: run["extra"].extend(["--learning_rates", "3e-2"]),
}


def test_a_run_resumes_only_a_checkpoint_of_itself(saved_backbone, images, tmp_path):
    """A finished run's checkpoints are kept; the same command resumes from the last one (and trains no step),
    a command with any field of the run's identity changed fails before training, naming the field and the ways
    out; --overwrite_output_dir starts over; folders the library did not write are left alone."""
    backbones = {"main": backbone_with(saved_backbone, SQUASH), "other": str(tmp_path / "other-backbone")}
    from conftest import tiny_backbone

    tiny_backbone("vit", seed=1).save_pretrained(backbones["other"])  # the same width and config, other weights
    SQUASH.save_pretrained(backbones["other"])
    sources = {"main": images, "other": make_images(tmp_path / "other-images", width=36)}
    output = tmp_path / "run"
    (output / "checkpoint-999").mkdir(parents=True)  # not the library's: never resumed from, never deleted

    def command(backbone="main", data="main", extra=()):
        base = ["--keep_checkpoints", "--learning_rates", "1e-2"]
        return command_line(backbones[backbone], sources[data], output, *base, *extra, probes=("linear",))

    _load_script().main(command())
    first = json.loads((output / "all_results.json").read_text())
    checkpoints = sorted(path.name for path in output.glob("checkpoint-*"))
    assert "checkpoint-999" in checkpoints and len(checkpoints) == 2
    for field, change in IDENTITY_CHANGES.items():
        run = {"backbone": "main", "data": "main", "extra": []}
        change(run)
        with pytest.raises(RunMismatchError, match="checkpoint of another run") as error:
            _load_script().main(command(**run))
        assert "--overwrite_output_dir" in str(error.value) and "new --output_dir" in str(error.value), field
    _load_script().main(command())  # the same command: resumes from its last checkpoint, trains nothing more
    state = json.loads((output / "trainer_state.json").read_text())
    assert json.loads((output / "all_results.json").read_text())["eval_accuracy"] == first["eval_accuracy"]
    assert state["global_step"] == json.loads((output / "run_summary.json").read_text())["optimizer_steps"]
    _load_script().main(command(extra=["--learning_rates", "3e-2", "--overwrite_output_dir"]))
    assert (output / "checkpoint-999").is_dir()
    shutil.rmtree(output)


def test_the_paper_protocol_refuses_another_runs_checkpoint(saved_backbone, images, tmp_path):
    backbone = backbone_with(saved_backbone, SQUASH)
    argv = command_line(backbone, images, tmp_path / "run", "--keep_checkpoints", probes=("linear",), paper=True)
    _load_script().main(argv)
    with pytest.raises(RunMismatchError, match="base_learning_rate"):
        _load_script().main([*argv, "--base_learning_rate", "2.0"])


def test_a_paper_protocol_figure_keeps_its_caveat_in_results_and_card(saved_backbone, images, tmp_path):
    """The paper's protocol chooses its epoch on the evaluation split: ``all_results.json``, the summary, the card's
    prose and every model-index figure of its card say so."""
    backbone = backbone_with(saved_backbone, SQUASH)
    output = tmp_path / "run"
    _load_script().main(command_line(backbone, images, output, probes=("linear",), paper=True))
    results = json.loads((output / "all_results.json").read_text())
    summary = json.loads((output / "run_summary.json").read_text())
    for record in (results, summary):
        assert "chosen on the evaluation split itself" in record["selection"]
    model = AutoModelForEfficientProbing.from_pretrained(output)
    card = build_model_card(model, "tester/paper-probe", card_info_from_summary(summary))
    assert "selected on the evaluation split itself" in card.text
    figures = card.data.eval_results
    assert figures and all(result.metric_name.endswith("(best epoch selected on this split)") for result in figures)
    assert figures[0].metric_value == pytest.approx(100 * results["eval_accuracy"], abs=0.01)
    low, high = results["eval_accuracy_interval"]
    assert low <= results["eval_accuracy"] <= high and summary["eval_accuracy_interval"] == [low, high]
    assert f"| {100 * low:.1f} to {100 * high:.1f} |" in card.text and "bootstrap over" in card.text
