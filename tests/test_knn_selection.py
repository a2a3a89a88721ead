"""k-NN's (k, T) is chosen on the split held out from train, never on the evaluation split it reports: relabelling
the evaluation images changes the reported figure and nothing that was chosen."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from test_training_end_to_end import backbone_dir, image_folder  # noqa: F401

from hf_efficient_probing.evaluation.knn import knn_classify, select_knn
from hf_efficient_probing.training import (
    DataArguments,
    ModelArguments,
    ProbeArguments,
    ProbingJob,
    ProbingTrainingArguments,
    prepare_data,
)
from hf_efficient_probing.training.job import load_backbone_and_processor
from hf_efficient_probing.training.protocols import run_knn


def unit(cosine):  # a 2-D unit vector at this cosine with [1, 0]
    return [cosine, math.sqrt(1 - cosine**2)]


# A query at [1, 0] has one class-0 neighbour at cosine 0.9 and two class-1 neighbours at 0.8: k=1 votes class 0,
# k=3 at T=1 votes class 1 (2 exp(0.8) > exp(0.9)). The selection query is class 0 (k=1 is right there), the
# evaluation query class 1 (k=3 would be right there): a choice made on the evaluation split would be k=3.
BANK = (torch.tensor([unit(0.9), unit(0.8), [0.8, -0.6], [-1.0, 0.0]]), torch.tensor([0, 1, 1, 2]))
QUERY = torch.tensor([[1.0, 0.0]])
SETTINGS = {"num_classes": 3, "ks": (1, 3), "temperatures": (1.0,)}


def test_select_knn_chooses_on_selection_and_evaluates_once_with_that_choice():
    result = select_knn(BANK, (QUERY, torch.tensor([0])), (QUERY, torch.tensor([1])), **SETTINGS)
    assert (result["chosen"]["k"], result["chosen"]["temperature"]) == (1, 1.0)
    assert result["selection_sweep"] == knn_classify(*BANK, QUERY, torch.tensor([0]), **SETTINGS)
    assert result["evaluation"] == {"k": 1, "temperature": 1.0, "top1": 0.0, "top5": 0.0}
    relabelled = select_knn(BANK, (QUERY, torch.tensor([0])), (QUERY, torch.tensor([0])), **SETTINGS)
    assert relabelled["chosen"] == result["chosen"] and relabelled["selection_sweep"] == result["selection_sweep"]
    assert relabelled["evaluation"]["top1"] == 1.0  # only the reported figure moved


def _run_knn(backbone, processor, images, output_dir):
    data_args = DataArguments(dataset_name=images, selection_fraction=0.375)
    probe_args = ProbeArguments(
        knn_eval=True, knn_features="gap", knn_k=[1, 3, 10], knn_temperatures=[0.07, 1.0], feature_layers=[-1]
    )
    training_args = ProbingTrainingArguments(
        output_dir=str(output_dir), use_cpu=True, per_device_eval_batch_size=8, report_to="none"
    )
    data = prepare_data(data_args, processor)
    run_knn(
        ProbingJob.from_arguments(ModelArguments(), data_args, probe_args, training_args, (backbone, processor), data)
    )
    return json.loads((output_dir / "knn_results.json").read_text())


def test_run_knn_choice_ignores_the_evaluation_labels(backbone_dir, image_folder, tmp_path):  # noqa: F811
    """The same run on a copy of the data set whose evaluation images of two classes swap labels (their folders
    swap names): the selection sweep and the chosen (k, T) stay, the evaluation figure moves."""
    relabelled = tmp_path / "relabelled"
    shutil.copytree(image_folder, relabelled)
    validation = relabelled / "validation"
    (validation / "left").rename(validation / "swap")
    (validation / "right").rename(validation / "left")
    (validation / "swap").rename(validation / "right")
    backbone, processor = load_backbone_and_processor(ModelArguments(model_name_or_path=backbone_dir))
    original = _run_knn(backbone, processor, image_folder, tmp_path / "original")
    swapped = _run_knn(backbone, processor, str(relabelled), tmp_path / "swapped")
    assert original["protocol"] == "default" and "selection split" in original["selection"]
    assert (original["bank_samples"], original["selection_samples"], original["eval_samples"]) == (15, 9, 15)
    assert swapped["selection_sweep"] == original["selection_sweep"]
    assert swapped["chosen"] == original["chosen"]
    assert swapped["evaluation"]["top1"] != pytest.approx(original["evaluation"]["top1"])
