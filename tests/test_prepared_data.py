"""`prepare_data` -> `PreparedData`: one object holds a job's splits, columns, classes and transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features
from datasets import Image as ImageFeature
from PIL import Image
from transformers import ViTImageProcessor

from hf_efficient_probing.training import DataArguments, DataError, prepare_data
from hf_efficient_probing.training.data import TRAIN, VALIDATION
from hf_efficient_probing.training.prepared import SELECTION

CLASSES = ["cat", "dog", "eel"]


def images_dataset(per_class: dict[str, int]) -> DatasetDict:
    """Grey images whose value is their index within their split, so that each row is recognisable."""
    features = Features({"picture": ImageFeature(), "kind": ClassLabel(names=CLASSES)})
    splits = {}
    for split, count in per_class.items():
        labels = [label for label in range(len(CLASSES)) for _ in range(count)]
        pictures = [Image.fromarray(np.full((8, 8, 3), i, np.uint8)) for i in range(len(labels))]
        splits[split] = Dataset.from_dict({"picture": pictures, "kind": labels}, features=features)
    return DatasetDict(splits)


@pytest.fixture
def processor():
    return ViTImageProcessor(size={"height": 8, "width": 8}, image_mean=[0.0] * 3, image_std=[1.0] * 3)


def test_prepared_data_finds_columns_applies_subsets_and_names_the_classes(processor):
    dataset = images_dataset({TRAIN: 6, VALIDATION: 4})
    data_args = DataArguments(dataset_name="animals", shots_per_class=5, max_eval_samples=7)
    data = prepare_data(data_args, processor, dataset=dataset)
    assert (data.image_column, data.label_column, data.class_names) == ("picture", "kind", CLASSES)
    assert data.label_maps == {"id2label": {0: "cat", 1: "dog", 2: "eel"}, "label2id": {"cat": 0, "dog": 1, "eel": 2}}
    assert len(data.splits[TRAIN]) == 15 and len(data.splits[VALIDATION]) == 7
    assert data.info == {
        "dataset": "animals",
        "image_column": "picture",
        "label_column": "kind",
        "shots_per_class": 5,
        "train_fraction": None,
        "train_samples": 15,
        "eval_samples": 7,
    }
    item = data.images(VALIDATION)[3]
    assert item["labels"] == 0 and torch.allclose(item["pixel_values"], torch.full((3, 8, 8), 3 / 255), atol=1e-6)
    flipped = data.images(VALIDATION, transform=lambda image: torch.tensor(image.size))[3]["pixel_values"]
    assert flipped.tolist() == [8, 8], "a given transform replaces the eval transform"


def test_held_out_selection_is_a_new_object_and_splits_train_only(processor):
    data = prepare_data(DataArguments(), processor, dataset=images_dataset({TRAIN: 10, VALIDATION: 2}))
    held = data.hold_out_selection(0.2, seed=0)
    assert SELECTION not in data.splits and len(data.splits[TRAIN]) == 30, "the prepared data stays as it was"
    values = {split: [int(np.asarray(row["picture"])[0, 0, 0]) for row in held.splits[split]] for split in held.splits}
    assert len(values[SELECTION]) == 6 and sorted(held.splits[SELECTION]["kind"]) == [0, 0, 1, 1, 2, 2]
    assert sorted(values[TRAIN] + values[SELECTION]) == list(range(30)), "train is split, nothing lost"
    assert held.splits[VALIDATION] is data.splits[VALIDATION]
    again, other = data.hold_out_selection(0.2, seed=0), data.hold_out_selection(0.2, seed=1)
    pixels = [[int(np.asarray(row["picture"])[0, 0, 0]) for row in d.splits[SELECTION]] for d in (again, other)]
    assert pixels[0] == values[SELECTION] != pixels[1], "seeded"


def test_no_data_set_is_a_clear_error(processor):
    with pytest.raises(DataError, match="pass --dataset_name"):
        prepare_data(DataArguments(), processor)
