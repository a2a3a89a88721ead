"""Low-shot episodes end to end (`run_probing` with ``--shots_per_class k --episodes n``): one backbone pass over the
union of the episodes' images, each episode trained on what its seed draws into a folder of its own, and the
top-level mean, spread and per-episode figures those of the episode folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage
from test_cache import single_thread  # noqa: F401

from hf_efficient_probing.demo import embedded_backbone, embedded_training_arguments
from hf_efficient_probing.training import protocols
from hf_efficient_probing.training.arguments import DataArguments, ModelArguments, ProbeArguments
from hf_efficient_probing.training.data import low_shot_indices
from hf_efficient_probing.training.grid import ProbingGridModel
from hf_efficient_probing.training.job import run_probing
from hf_efficient_probing.training.prepared import prepare_data
from hf_efficient_probing.training.selection import indices_fingerprint

CLASSES, TRAIN_PER_CLASS, SHOTS, EPISODES, SUBSET_SEED = 3, 12, 4, 3, 5
FIGURES = ("eval_accuracy", "eval_top5_accuracy")


def coloured_squares(per_class: int, seed: int) -> Dataset:
    """Noise images with a square whose colour channel is the class; ``row`` is each image's place in its split."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in np.repeat(np.arange(CLASSES), per_class):
        pixels = rng.integers(0, 80, (32, 32, 3), dtype=np.uint8)
        pixels[8:24, 8:24, label] = 230
        images.append(PILImage.fromarray(pixels))
        labels.append(int(label))
    features = Features({"image": Image(), "label": ClassLabel(num_classes=CLASSES), "row": Value("int64")})
    return Dataset.from_dict({"image": images, "label": labels, "row": list(range(len(labels)))}, features=features)


@pytest.fixture(scope="module")
def episodes_run(tmp_path_factory):
    """The run, the images its backbone read, and the train and selection rows (of train) each episode trained on."""
    path = tmp_path_factory.mktemp("episodes")
    backbone, processor = embedded_backbone("synthetic")
    dataset = DatasetDict(train=coloured_squares(TRAIN_PER_CLASS, 0), validation=coloured_squares(4, 1))
    data_args = DataArguments(
        dataset_name="coloured-squares", shots_per_class=SHOTS, episodes=EPISODES, subset_seed=SUBSET_SEED
    )
    data_args.token_cache_dir = str(path / "tokens")
    data = prepare_data(data_args, processor, dataset=dataset)
    probe_args = ProbeArguments(probe="linear", feature_layers=[-1], learning_rates=[1e-1, 1e-2])
    extracted, trained = [], []
    forward, train_grid = backbone.forward, protocols.train_grid

    def counting(*args, **kwargs):
        extracted.append(len(kwargs["pixel_values"] if "pixel_values" in kwargs else args[0]))
        return forward(*args, **kwargs)

    def recording(grid, args, splits, options):
        union = splits.train.dataset  # the cached union of every episode's rows, in the order of train's rows
        initial = {key: value.clone() for key, value in grid.heads.state_dict().items()}
        trained.append((union, list(splits.train.indices), list(splits.selection.indices), grid.members, initial))
        return train_grid(grid, args, splits, options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(backbone, "forward", counting)
        patch.setattr(protocols, "train_grid", recording)
        args = embedded_training_arguments(str(path / "run"), num_train_epochs=2, warmup_epochs=0)
        metrics = run_probing(ModelArguments(), data_args, probe_args, args, (backbone, processor), data)
    return path / "run", metrics, sum(extracted), trained, data, backbone


def test_each_episode_trains_on_what_its_seed_draws_after_one_backbone_pass(episodes_run):
    run, metrics, extracted, trained, data, backbone = episodes_run
    labels = np.array(data.splits["train"]["label"])
    draws = [low_shot_indices(labels, SHOTS, None, SUBSET_SEED + e) for e in range(EPISODES)]
    union = sorted(set().union(*draws))
    assert len(union) < len(labels), "the draws must leave some of train unread for the union to be tested"
    assert extracted == len(union) + len(data.splits["validation"]), "the union and the evaluation split, once each"
    assert len(trained) == EPISODES
    for e, (draw, (cached, train_rows, selection_rows, members, initial)) in enumerate(
        zip(draws, trained, strict=True)
    ):
        assert len(cached) == len(union)
        rows = [union[position] for position in train_rows + selection_rows]
        assert sorted(rows) == draw, "train and selection together are the episode's own draw"
        assert not set(train_rows) & set(selection_rows)
        alone = ProbingGridModel.from_backbone(backbone, members, seed=SUBSET_SEED + e, num_labels=CLASSES)
        for key, value in alone.heads.state_dict().items():  # the episode's grid, initialised from its seed
            assert torch.equal(initial[key], value), (e, key)
        record = json.loads((run / f"episode_{e}" / "run_summary.json").read_text())
        assert record["train_rows_fingerprint"] == indices_fingerprint([union[p] for p in train_rows])
        assert record["selection_rows_fingerprint"] == indices_fingerprint([union[p] for p in selection_rows])
    assert metrics["episodes"] == [SUBSET_SEED + e for e in range(EPISODES)]


def test_the_top_level_spread_is_that_of_the_episode_folders(episodes_run):
    run, metrics, *_ = episodes_run
    folders = [json.loads((run / f"episode_{e}" / "all_results.json").read_text()) for e in range(EPISODES)]
    summaries = [json.loads((run / f"episode_{e}" / "run_summary.json").read_text()) for e in range(EPISODES)]
    top = json.loads((run / "all_results.json").read_text())
    summary = json.loads((run / "run_summary.json").read_text())
    assert top == metrics == summary["chosen"]["linear"]
    for figure in FIGURES:
        values = [folder[figure] for folder in folders]
        assert top[figure] == pytest.approx(np.mean(values))
        assert top[f"{figure}_std"] == pytest.approx(np.std(values, ddof=1))
    assert len({folder["eval_accuracy"] for folder in folders}) > 1, "episodes that differ, or the spread is 0"
    for e, (folder, own) in enumerate(zip(folders, summaries, strict=True)):
        assert own["seed"] == SUBSET_SEED + e == summary["episodes"][e]["seed"]
        chosen = own["chosen"]["linear"]["name"]
        assert top["per_episode"][str(SUBSET_SEED + e)] == {**folder, "chosen": chosen}, "each episode's own figures"
