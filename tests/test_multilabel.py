"""Multi-label data sets: the label columns read, the metrics (against scikit-learn), the token cache's label vectors,
the threshold chosen on held-out data and saved with the probe, and `pipeline` returning the classes above it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Sequence, Value
from huggingface_hub.errors import StrictDataclassError
from PIL import Image as PILImage
from test_cache import single_thread  # noqa: F401
from transformers import AutoImageProcessor, pipeline

import hf_efficient_probing as hep
from hf_efficient_probing.cache import TokenCache
from hf_efficient_probing.demo import embedded_backbone, embedded_training_arguments
from hf_efficient_probing.evaluation.multilabel import choose_threshold, f1_scores, multi_label_scores
from hf_efficient_probing.hub.cards import card_info_from_summary
from hf_efficient_probing.training.arguments import DataArguments, ModelArguments, ProbeArguments
from hf_efficient_probing.training.data import DataError
from hf_efficient_probing.training.engine import evaluate_multi_label
from hf_efficient_probing.training.grid import GridMember, ProbingGridModel
from hf_efficient_probing.training.job import run_probing
from hf_efficient_probing.training.prepared import SELECTION, prepare_data

QUADRANTS = ["top-left", "top-right", "bottom-left", "bottom-right"]


def quadrant_images(count: int, seed: int, frequency: float = 0.4) -> Dataset:
    """Dark noise images with a bright square in each quadrant that is one of the image's classes (each with
    probability ``frequency``, so some images have none)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for _ in range(count):
        present = np.flatnonzero(rng.random(4) < frequency)
        pixels = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
        for quadrant in present:
            row, column = divmod(int(quadrant), 2)
            pixels[row * 16 + 3 : row * 16 + 13, column * 16 + 3 : column * 16 + 13] = 230
        images.append(PILImage.fromarray(pixels))
        labels.append(present.tolist())
    features = Features({"image": Image(), "labels": Sequence(ClassLabel(names=QUADRANTS))})
    return Dataset.from_dict({"image": images, "labels": labels}, features=features)


def quadrants() -> DatasetDict:
    return DatasetDict(train=quadrant_images(160, 0), validation=quadrant_images(80, 1))


@pytest.fixture(scope="module")
def processor():
    return embedded_backbone("synthetic")[1]


# ------------------------------------------------------------------------------------------------------------------
# Metrics


def test_average_precision_and_f1_match_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    targets = (rng.random((60, 5)) < 0.3).astype(np.float32)
    targets[0] = 1  # every class has a positive
    logits = rng.normal(size=(60, 5)) + 2 * targets
    logits[:, 1] = np.round(logits[:, 1])  # ties: one precision-recall step per distinct score
    scores = multi_label_scores(torch.tensor(logits), torch.tensor(targets), threshold=0.6)
    assert scores["map"] == pytest.approx(metrics.average_precision_score(targets, logits, average="macro"))
    assert scores["micro_map"] == pytest.approx(metrics.average_precision_score(targets, logits, average="micro"))
    predicted = 1 / (1 + np.exp(-logits)) >= 0.6
    assert scores["f1_micro"] == pytest.approx(metrics.f1_score(targets, predicted, average="micro"))
    assert scores["f1_macro"] == pytest.approx(metrics.f1_score(targets, predicted, average="macro"))


def test_classes_without_a_positive_are_left_out_of_the_macro_mean():
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    scores = multi_label_scores(logits, targets)
    assert scores["classes_scored"] == 1 and scores["map"] == pytest.approx(1.0)


def test_the_threshold_is_the_best_micro_f1_on_the_images_given():
    probabilities = torch.tensor([[0.9, 0.2], [0.35, 0.8], [0.1, 0.3]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    threshold = choose_threshold(probabilities, targets)
    assert threshold == pytest.approx(0.31)  # every positive above, every negative below: the lowest such threshold
    assert f1_scores(probabilities, targets, threshold)[0] == pytest.approx(1.0)


def test_the_threshold_maximises_the_micro_f1_not_the_macro_f1():
    # class 0: four positives at 0.6, two negatives at 0.4 and 0.2; class 1: one positive at 0.3, negatives at 0.35
    # and 0.1. Micro F1 is best at (0.4, 0.6] (every class-0 positive, no negative: 8/9); macro F1 at (0.2, 0.3]
    # (class 1's positive found: (8/10 + 1/2) / 2 against (1 + 0) / 2).
    probabilities = torch.tensor([[0.6, 0.1]] * 4 + [[0.4, 0.35], [0.2, 0.3]])
    targets = torch.tensor([[1.0, 0.0]] * 4 + [[0.0, 0.0], [0.0, 1.0]])
    threshold = choose_threshold(probabilities, targets)
    assert 0.4 < threshold <= 0.6
    assert f1_scores(probabilities, targets, 0.25)[1] > f1_scores(probabilities, targets, threshold)[1]


# ------------------------------------------------------------------------------------------------------------------
# Label columns


def _one_split(labels, feature) -> DatasetDict:
    images = [PILImage.new("RGB", (32, 32)) for _ in labels]
    features = Features({"image": Image(), "labels": feature})
    split = Dataset.from_dict({"image": images, "labels": labels}, features=features)
    return DatasetDict(train=split, validation=split)


def test_class_index_lists_and_multi_hot_vectors_read_as_the_same_vectors(processor):
    indices = prepare_data(
        DataArguments(dataset_name="x"),
        processor,
        dataset=_one_split([[0, 2], [], [1]], Sequence(ClassLabel(names=["a", "b", "c"]))),
    )
    vectors = prepare_data(
        DataArguments(dataset_name="x"),
        processor,
        dataset=_one_split([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]], Sequence(Value("float32"))),
    )
    for data, names in ((indices, ["a", "b", "c"]), (vectors, ["0", "1", "2"])):
        assert data.class_names == names and data.label_maps["problem_type"] == "multi_label_classification"
        rows = [data.images("train")[i]["labels"].tolist() for i in range(3)]
        assert rows == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]  # an image with no class is a zero vector


@pytest.mark.parametrize(
    "labels, feature, message",
    [
        ([[0, 1], [2]], Sequence(Value("int64")), "class indices or multi-hot vectors"),
        ([[0.0, 1.0], [1.0]], Sequence(Value("float32")), "different lengths"),
        ([[0.0, 2.0], [1.0, 0.0]], Sequence(Value("float32")), "entries of 0 or 1"),
        ([["a"], ["b"]], Sequence(Value("string")), "class indices or multi-hot vectors"),
    ],
)
def test_unusable_label_lists_are_clear_errors(processor, labels, feature, message):
    with pytest.raises(DataError, match=message):
        prepare_data(DataArguments(dataset_name="x"), processor, dataset=_one_split(labels, feature))


def test_low_shot_flags_are_refused_for_multi_label_data(processor):
    with pytest.raises(DataError, match="multi-label.*--shots_per_class"):
        prepare_data(DataArguments(dataset_name="x", shots_per_class=2), processor, dataset=quadrants())


def test_the_selection_split_is_a_seeded_random_fraction(processor):
    data = prepare_data(DataArguments(dataset_name="x"), processor, dataset=quadrants())
    first, again, other = (data.hold_out_selection(0.25, seed) for seed in (0, 0, 1))
    assert len(first.splits[SELECTION]) == 40 and len(first.splits["train"]) == 120
    assert first.info["selection_split"] == again.info["selection_split"]
    assert first.info["selection_split"]["rows_fingerprint"] != other.info["selection_split"]["rows_fingerprint"]
    assert "random, not stratified" in first.info["selection_split"]["rule"]


# ------------------------------------------------------------------------------------------------------------------
# Training, the cache, the threshold and the pipeline


def _probabilities(model, dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """By hand: the sigmoid scores of ``model`` on every image of ``dataset``, and their label vectors."""
    scores, labels = [], []
    with torch.no_grad():
        for batch in torch.utils.data.DataLoader(dataset, batch_size=32):
            scores.append(torch.sigmoid(model(pixel_values=batch["pixel_values"]).logits))
            labels.append(batch["labels"])
    return torch.cat(scores), torch.cat(labels)


def test_a_multi_label_probe_and_every_grid_member_train_on_binary_cross_entropy():
    backbone = embedded_backbone("synthetic")[0]
    label_maps = {"num_labels": 4, "problem_type": "multi_label_classification"}
    pixel_values = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[1.0, 0, 0, 1], [0, 0, 0, 0], [0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 1, 0], [1, 0, 0, 0]])
    probe = hep.AutoModelForEfficientProbing.from_backbone(backbone, probe="linear", feature_layers=[2], **label_maps)
    output = probe(pixel_values=pixel_values, labels=labels)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    torch.testing.assert_close(output.loss, bce(output.logits, labels))
    assert not torch.allclose(output.loss, torch.nn.functional.cross_entropy(output.logits, labels))
    members = [GridMember("linear", 2, 1e-1), GridMember("ep", 2, 1e-2, (("num_queries", 4),))]
    grid = ProbingGridModel.from_backbone(backbone, members, seed=0, **label_maps)
    output = grid(pixel_values=pixel_values, labels=labels)
    torch.testing.assert_close(output["loss"], sum(bce(output["logits"][:, k], labels) for k in range(2)))


def _frequency_baseline(targets: np.ndarray) -> float:
    """The macro mAP of scoring every image alike: each class's AP is then its frequency."""
    return float(targets.mean(0)[targets.sum(0) > 0].mean())


@pytest.mark.slow
@pytest.mark.usefixtures("single_thread")
def test_a_multi_label_grid_beats_the_label_frequency_and_pipeline_returns_the_classes_above_its_threshold(
    tmp_path, processor
):
    backbone_and_processor = embedded_backbone("synthetic")
    data_args = DataArguments(dataset_name="quadrants", token_cache_dir=str(tmp_path / "tokens"))
    data = prepare_data(data_args, processor, dataset=quadrants())
    probe_args = ProbeArguments(probe=["ep", "linear"], num_queries=4, feature_layers=[-1], learning_rates=[3e-2, 1e-1])
    args = embedded_training_arguments(str(tmp_path / "run"), num_train_epochs=8, warmup_epochs=0)
    results = run_probing(ModelArguments(), data_args, probe_args, args, backbone_and_processor, data)

    evaluation = np.stack([data.images("validation")[i]["labels"].numpy() for i in range(80)])
    baseline = _frequency_baseline(evaluation)
    for kind in ("ep", "linear"):
        assert results[kind]["eval_map"] > baseline + 0.3, (kind, results[kind], baseline)
    # the token cache stores every row's label vector
    caches = [TokenCache(path.parent) for path in (tmp_path / "tokens").glob("*/manifest.json")]
    validation = next(cache for cache in caches if cache.key["split"] == "validation")
    assert torch.equal(validation.dataset().labels, torch.from_numpy(evaluation))

    saved = tmp_path / "run" / "ep"
    model = hep.AutoModelForEfficientProbing.from_pretrained(saved)
    threshold = model.config.multi_label_threshold
    assert threshold == results["ep"]["multi_label_threshold"]
    classify = pipeline("image-classification", model=str(saved))
    saved_processor, sizes = AutoImageProcessor.from_pretrained(saved), set()
    for image in data.splits["validation"][:8]["image"]:
        with torch.no_grad():
            probabilities = torch.sigmoid(model(**saved_processor(image, return_tensors="pt")).logits[0]).tolist()
        expected = {QUADRANTS[i]: p for i, p in enumerate(probabilities) if p >= threshold}
        returned = {entry["label"]: entry["score"] for entry in classify(image)}
        assert returned == pytest.approx(expected, abs=1e-5), "every class whose sigmoid reaches the threshold"
        sizes.add(len(returned))
    assert len(sizes) > 1, "images with different numbers of classes above the threshold"
    assert len(classify(image, top_k=4)) == 4  # an explicit top_k is transformers' behaviour

    # the threshold is chosen on the held-out split: the evaluation labels do not move it
    held_out = data.hold_out_selection(0.1, 0)
    shuffled = held_out.splits["validation"]
    permutation = np.random.default_rng(0).permutation(len(shuffled))
    shuffled = shuffled.remove_columns("labels").add_column("labels", [shuffled["labels"][i] for i in permutation])
    shuffled = shuffled.cast_column("labels", held_out.splits["train"].features["labels"])
    permuted = dataclasses.replace(held_out, splits=DatasetDict({**held_out.splits, "validation": shuffled}))
    eval_args = embedded_training_arguments(str(tmp_path / "eval"), per_device_train_batch_size=16)
    scores = [
        evaluate_multi_label(model, eval_args, d.images(SELECTION), d.images("validation"))
        for d in (held_out, permuted)
    ]
    assert scores[0]["multi_label_threshold"] == scores[1]["multi_label_threshold"] == threshold
    assert threshold == choose_threshold(*_probabilities(model, held_out.images(SELECTION))), "sigmoid, held out"
    assert scores[0]["eval_map"] == pytest.approx(results["ep"]["eval_map"], abs=0.01)  # cached fp16 tokens there
    assert scores[1]["eval_map"] < scores[0]["eval_map"] - 0.2


def test_a_threshold_needs_a_multi_label_probe_and_a_probability():
    backbone = embedded_backbone("synthetic")[0]
    with pytest.raises(StrictDataclassError, match="problem_type"):
        hep.EfficientProbingConfig(backbone_config=backbone.config, num_queries=4, multi_label_threshold=0.5)
    with pytest.raises(StrictDataclassError, match=r"probability in \(0, 1\)"):
        hep.EfficientProbingConfig(
            backbone_config=backbone.config,
            num_queries=4,
            problem_type="multi_label_classification",
            multi_label_threshold=1.5,
        )


def test_knn_evaluation_is_refused_for_multi_label_data(tmp_path, processor):
    data_args = DataArguments(dataset_name="quadrants")
    data = prepare_data(data_args, processor, dataset=quadrants())
    probe_args = ProbeArguments(probe="linear", knn_eval=True)
    args = embedded_training_arguments(str(tmp_path / "run"))
    with pytest.raises(ValueError, match="--knn_eval.*multi-label"):
        run_probing(ModelArguments(), data_args, probe_args, args, embedded_backbone("synthetic"), data)


@pytest.mark.slow
@pytest.mark.usefixtures("single_thread")
def test_the_paper_protocol_keeps_its_best_epoch_by_map_and_its_threshold_from_the_training_images(tmp_path, processor):
    data_args = DataArguments(dataset_name="quadrants")
    # classes far rarer in the evaluation split than in train: a threshold chosen there would be another
    dataset = DatasetDict(train=quadrant_images(160, 0), validation=quadrant_images(80, 1, frequency=0.1))
    data = prepare_data(data_args, processor, dataset=dataset)
    probe_args = ProbeArguments(probe="linear", protocol="paper")
    args = embedded_training_arguments(
        str(tmp_path / "run"), num_train_epochs=3, warmup_epochs=0, per_device_train_batch_size=32
    )
    results = run_probing(ModelArguments(), data_args, probe_args, args, embedded_backbone("synthetic"), data)
    summary = json.loads((tmp_path / "run" / "run_summary.json").read_text())
    maps = [entry["eval_map"] for entry in summary["per_epoch"]]
    assert len(maps) == 3 and summary["best_epoch"] == 1 + int(np.argmax(maps))
    assert results["threshold_chosen_on"].startswith("the training images")
    model = hep.AutoModelForEfficientProbing.from_pretrained(tmp_path / "run")
    assert model.config.multi_label_threshold == results["multi_label_threshold"]
    assert results["multi_label_threshold"] == choose_threshold(*_probabilities(model, data.images("train")))
    assert results["multi_label_threshold"] != choose_threshold(*_probabilities(model, data.images("validation")))
    assert "mAP (%)" in (tmp_path / "run" / "run_summary.md").read_text()


@pytest.mark.slow
@pytest.mark.usefixtures("single_thread")
def test_seeds_on_multi_label_data_choose_by_the_mean_held_out_map_and_report_its_spread(tmp_path, processor):
    data_args = DataArguments(dataset_name="quadrants", token_cache_dir=str(tmp_path / "tokens"))
    data = prepare_data(data_args, processor, dataset=quadrants())
    seeds = [0, 1, 2]
    probe_args = ProbeArguments(probe="linear", feature_layers=[-1], learning_rates=[3e-3, 1e-1], seeds=seeds)
    args = embedded_training_arguments(str(tmp_path / "run"), num_train_epochs=4, warmup_epochs=0)
    results = run_probing(ModelArguments(), data_args, probe_args, args, embedded_backbone("synthetic"), data)
    summary = json.loads((tmp_path / "run" / "run_summary.json").read_text())

    by_setting: dict[float, list[float]] = {}
    for member in summary["members"]:
        by_setting.setdefault(member["learning_rate"], []).append(member["selection_map"])
    assert all(len(maps) == 3 for maps in by_setting.values()), "every setting trained under every seed"
    means = {rate: np.mean(maps) for rate, maps in by_setting.items()}
    assert results["learning_rate"] == max(means, key=means.get), "the setting with the best mean held-out mAP"
    assert results["selection_map"] == pytest.approx(means[results["learning_rate"]])
    assert "mean map over the seeds" in summary["selection"]

    assert results["seeds"] == seeds and sorted(results["per_seed"]) == ["0", "1", "2"]
    for figure in ("eval_map", "eval_micro_map", "eval_f1_micro", "eval_f1_macro"):
        values = [results["per_seed"][str(seed)][figure] for seed in seeds]
        assert results[figure] == pytest.approx(np.mean(values))
        assert results[f"{figure}_std"] == pytest.approx(np.std(values, ddof=1))
    assert len({results["per_seed"][str(seed)]["eval_map"] for seed in seeds}) == 3, "the seeds train apart"
    evaluation = np.stack([data.images("validation")[i]["labels"].numpy() for i in range(80)])
    for seed in seeds:  # each seed learnt its own rows' labels
        assert results["per_seed"][str(seed)]["eval_map"] > _frequency_baseline(evaluation) + 0.35, seed
    saved = hep.AutoModelForEfficientProbing.from_pretrained(tmp_path / "run").config
    saved_seed = results["per_seed"][str(results["saved_seed"])]
    assert saved.multi_label_threshold == results["multi_label_threshold"] == saved_seed["multi_label_threshold"]
    table = (tmp_path / "run" / "run_summary.md").read_text()
    assert f"{100 * results['eval_map']:.2f} ± {100 * results['eval_map_std']:.2f}" in table and "## Each seed" in table
    card = card_info_from_summary(summary)  # the saved seed's probe: its own epoch (the card has no mAP spread yet)
    assert card.runs is None and card.best_epoch == int(saved_seed["best_epoch"])
