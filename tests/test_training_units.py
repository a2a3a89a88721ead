"""Units of the training package: image conversion, data checks, low-shot, LARS, schedule, metric, k-NN."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from datasets import Image as ImageFeature
from PIL import Image

from hf_efficient_probing.evaluation.knn import knn_classify, nearest_neighbors
from hf_efficient_probing.images import to_rgb
from hf_efficient_probing.training import (
    LARS,
    DataError,
    ImageClassificationDataset,
    build_optimizer,
    check_dataset,
    low_shot_indices,
    probing_collator,
    warmup_cosine_schedule,
)
from hf_efficient_probing.training.data import detect_image_column, detect_label_column, find_unreadable

# ---------------------------------------------------------------------------------------------------------------
# Images


def test_to_rgb_scales_16_bit_grey_instead_of_saturating():
    array = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    rgb = np.asarray(to_rgb(Image.fromarray(array)))
    assert rgb.shape == (2, 2, 3)
    expected = np.round(array / 65535 * 255).astype(np.uint8)
    assert (rgb[..., 0] == expected).all() and (rgb[..., 1] == expected).all()


def test_to_rgb_composites_transparency_over_white():
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (10, 20, 30, 255))
    rgb = np.asarray(to_rgb(rgba))
    assert tuple(rgb[0, 0]) == (255, 255, 255) and tuple(rgb[0, 1]) == (10, 20, 30)


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "1", "LA", "F"])
def test_to_rgb_other_modes(mode):
    image = Image.new("RGB", (4, 4), (200, 40, 90)).convert(mode) if mode != "F" else Image.new("F", (4, 4), 0.5)
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (4, 4)
    if mode == "F":
        assert np.asarray(rgb)[0, 0, 0] == 128  # [0, 1] floats map to 0-255
    if mode == "CMYK":
        assert np.abs(np.asarray(rgb)[0, 0].astype(int) - (200, 40, 90)).max() <= 2


# ---------------------------------------------------------------------------------------------------------------
# Data checks


def _split(labels, feature=None, images=None):
    features = Features({"image": ImageFeature(), "label": feature or ClassLabel(names=["a", "b", "c"])})
    images = images or [Image.new("RGB", (8, 8), (i * 20 % 255, 0, 0)) for i in range(len(labels))]
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


def test_check_dataset_names_split_and_fix():
    good = _split([0, 1, 2, 0])
    with pytest.raises(DataError, match="'validation' split is empty"):
        check_dataset(DatasetDict(train=good, validation=good.select([])), "label", 3)
    with pytest.raises(DataError, match=r"split 'train' has labels \[5\] outside \[0, 3\)"):
        check_dataset(DatasetDict(train=_split([0, 5], Value("int64")), validation=good), "label", 3)
    with pytest.raises(DataError, match="classes that the 'train' split never shows: \\[2\\]"):
        check_dataset(DatasetDict(train=_split([0, 1]), validation=_split([0, 2])), "label", 3)
    with pytest.raises(DataError, match="holds str labels.*class_encode|cast_column"):
        check_dataset(DatasetDict(train=_split(["x", "y"], Value("string")), validation=good), "label", 3)
    with pytest.raises(DataError, match="no column 'target'"):
        check_dataset(DatasetDict(train=good, validation=good), "target", 3)
    one_class = _split([0, 0], ClassLabel(names=["a"]))
    with pytest.raises(DataError, match="names 1 class: a classifier needs at least two"):
        check_dataset(DatasetDict(train=one_class, validation=one_class), "label", 1)
    check_dataset(DatasetDict(train=good, validation=good), "label", 3)


def test_a_one_class_data_set_fails_when_the_data_is_prepared():
    """Not a regression model trained in silence (transformers' loss for one label): the data check stops the job
    before any backbone runs."""
    from hf_efficient_probing.training import DataArguments, prepare_data

    one_class = _split([0, 0, 0, 0], ClassLabel(names=["a"]))
    with pytest.raises(DataError, match="at least two"):
        prepare_data(DataArguments(), None, dataset=DatasetDict(train=one_class, validation=one_class))


def test_column_detection():
    data = _split([0, 1])
    assert detect_image_column(data) == "image" and detect_label_column(data) == "label"
    plain = Dataset.from_dict({"a": [1], "b": [2]})
    with pytest.raises(DataError, match="--image_column_name"):
        detect_image_column(plain)
    with pytest.raises(DataError, match="--label_column_name"):
        detect_label_column(plain)


def test_unreadable_image_error_names_index_and_can_be_found():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    rows = [{"bytes": buffer.getvalue(), "path": None}] * 3
    rows[1] = {"bytes": b"not an image at all", "path": None}
    data = Dataset.from_dict(
        {"image": rows, "label": [0, 1, 0]}, features=Features({"image": ImageFeature(), "label": Value("int64")})
    )
    items = ImageClassificationDataset(data, "image", "label", lambda image: torch.zeros(1), split="train")
    assert items[0]["labels"] == 0
    with pytest.raises(DataError, match="index 1 of the train split"):
        items[1]
    assert find_unreadable(data, "image") == [1]


def test_collator_stacks_images_or_tokens():
    batch = probing_collator([{"tokens": torch.ones(3, 4), "labels": 1}, {"tokens": torch.zeros(3, 4), "labels": 0}])
    assert batch["tokens"].shape == (2, 3, 4) and batch["labels"].tolist() == [1, 0]
    batch = probing_collator([{"pixel_values": torch.ones(3, 2, 2), "labels": 2}])
    assert batch["pixel_values"].shape == (1, 3, 2, 2)


# ---------------------------------------------------------------------------------------------------------------
# Low-shot


def test_low_shot_is_stratified_and_reproducible():
    labels = np.repeat(np.arange(4), [10, 7, 3, 12])
    picked = low_shot_indices(labels, shots_per_class=5, seed=3)
    counts = np.bincount(labels[picked], minlength=4)
    assert counts.tolist() == [5, 5, 3, 5]  # the 3-image class keeps all it has
    assert picked == low_shot_indices(labels, shots_per_class=5, seed=3)
    assert picked != low_shot_indices(labels, shots_per_class=5, seed=4)
    fraction = low_shot_indices(labels, fraction=0.5, seed=0)
    assert np.bincount(labels[fraction]).tolist() == [5, 4, 2, 6]  # round(0.5 * n) per class (banker's rounding)
    with pytest.raises(ValueError, match="exactly one"):
        low_shot_indices(labels)


# ---------------------------------------------------------------------------------------------------------------
# LARS and the schedule


def _reference_lars_step(param, grad, buffer, lr, weight_decay, momentum, trust):
    """The update rule written out for one parameter (official-code.md section 3)."""
    update = grad.clone()
    if param.ndim > 1:
        update = update + weight_decay * param
        p_norm, u_norm = param.norm(), update.norm()
        ratio = trust * p_norm / u_norm if p_norm > 0 and u_norm > 0 else 1.0
        update = update * ratio
    buffer = momentum * buffer + update
    return param - lr * buffer, buffer


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_lars_matches_update_rule(weight_decay):
    torch.manual_seed(0)
    weight, bias, query = torch.randn(5, 4), torch.randn(5), torch.randn(1, 3, 4)
    params = [torch.nn.Parameter(t.clone()) for t in (weight, bias, query)]
    optimizer = LARS([{"params": params, "weight_decay": weight_decay}], lr=0.7, momentum=0.9, trust_coefficient=0.001)
    reference = [(t.clone(), torch.zeros_like(t)) for t in (weight, bias, query)]
    for _ in range(3):
        grads = [torch.randn_like(p) for p in params]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
        reference = [
            _reference_lars_step(value, g, buffer, 0.7, weight_decay, 0.9, 0.001)
            for (value, buffer), g in zip(reference, grads, strict=True)
        ]
    for p, (expected, _) in zip(params, reference, strict=True):
        torch.testing.assert_close(p.data, expected)


def test_lars_bias_gets_plain_momentum_sgd():
    bias = torch.nn.Parameter(torch.ones(3))
    optimizer = LARS([bias], lr=0.5, weight_decay=0.1)
    bias.grad = torch.full((3,), 2.0)
    optimizer.step()
    torch.testing.assert_close(bias.data, torch.full((3,), 0.0))  # 1 - 0.5 * 2: no decay, no trust ratio


def test_build_optimizer_never_decays_1d_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    optimizer = build_optimizer(model, "adamw", 0.1, weight_decay=0.3)
    by_decay = {group["weight_decay"]: [p.ndim for p in group["params"]] for group in optimizer.param_groups}
    assert by_decay == {0.3: [2], 0.0: [1, 1, 1]}
    with pytest.raises(ValueError, match="Unknown optimizer"):
        build_optimizer(model, "adam8bit", 0.1)


def test_warmup_cosine_schedule():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    schedule = warmup_cosine_schedule(optimizer, warmup_epochs=1, epochs=5, total_steps=20)  # 4 warm-up steps
    lrs = []
    for _ in range(21):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[:5] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert lrs[12] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 8 / 16)))
    assert lrs[20] == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Metric module (offline, by path)


def test_top_k_accuracy_metric_loads_offline_by_path():
    import evaluate

    from hf_efficient_probing.evaluation.metrics import TOP_K_ACCURACY_PATH

    metric = evaluate.load(TOP_K_ACCURACY_PATH, keep_in_memory=True)
    ranked = [[3, 1, 2, 0, 4, 5], [0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0]]
    result = metric.compute(predictions=ranked, references=[3, 5, 0])
    assert result == {"accuracy": pytest.approx(1 / 3), "top5_accuracy": pytest.approx(1 / 3)}


def test_top_k_accuracy_scores_several_probes_in_one_call_as_each_alone():
    import evaluate

    from hf_efficient_probing.evaluation.metrics import TOP_K_ACCURACY_PATH

    metric = evaluate.load(TOP_K_ACCURACY_PATH, keep_in_memory=True)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, 40)
    ranked = np.stack([rng.permutation(8) for _ in range(40 * 3)]).reshape(40, 3, 8)
    ranked[:, 1, 0] = labels  # probe 1 is always right, probe 2 has the truth first in about half the examples
    ranked[::2, 2, 0] = labels[::2]
    together = metric.compute(predictions=ranked.reshape(-1, 8), references=np.repeat(labels, 3), k=5, num_probes=3)
    for probe in range(3):
        alone = metric.compute(predictions=ranked[:, probe], references=labels, k=5)
        assert together["accuracy"][probe] == alone["accuracy"]
        assert together["top5_accuracy"][probe] == alone["top5_accuracy"]
    assert together["accuracy"][1] == 1.0 and together["accuracy"][0] != together["accuracy"][2]
    with pytest.raises(ValueError, match="cannot hold 3 probes"):
        metric.compute(predictions=ranked.reshape(-1, 8)[:-1], references=np.repeat(labels, 3)[:-1], num_probes=3)


# ---------------------------------------------------------------------------------------------------------------
# k-NN


def _brute_force_knn(train, train_labels, test, test_labels, num_classes, k, temperature):
    train = train / train.norm(dim=1, keepdim=True)
    test = test / test.norm(dim=1, keepdim=True)
    top1 = top5 = 0
    for query, truth in zip(test, test_labels.tolist(), strict=True):
        sims = (train @ query).tolist()
        order = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        votes = [0.0] * num_classes
        for i in order:
            votes[int(train_labels[i])] += math.exp(sims[i] / temperature)
        ranked = [c for c in sorted(range(num_classes), key=lambda c: -votes[c]) if votes[c] > 0]
        top1 += ranked[0] == truth
        top5 += truth in ranked[:5]
    return top1 / len(test), top5 / len(test)


def test_knn_matches_brute_force_with_small_blocks():
    torch.manual_seed(0)
    train, test = torch.randn(37, 6), torch.randn(11, 6)
    train_labels, test_labels = torch.randint(0, 7, (37,)), torch.randint(0, 7, (11,))
    results = knn_classify(
        train,
        train_labels,
        test,
        test_labels,
        num_classes=7,
        ks=(1, 5, 20),
        temperatures=(0.07, 0.5),
        test_chunk=4,
        train_block=5,
    )
    assert len(results) == 6
    for result in results:
        expected = _brute_force_knn(train, train_labels, test, test_labels, 7, result["k"], result["temperature"])
        assert (result["top1"], result["top5"]) == pytest.approx(expected)


def test_nearest_neighbors_blockwise_equals_full():
    torch.manual_seed(1)
    train, test = (
        torch.nn.functional.normalize(torch.randn(50, 4), dim=1),
        torch.nn.functional.normalize(torch.randn(3, 4), dim=1),
    )
    sims, idx = nearest_neighbors(train, test, k=7, train_block=6)
    full_sims, full_idx = (test @ train.T).topk(7, dim=1)
    torch.testing.assert_close(sims, full_sims)
    assert torch.equal(idx, full_idx)


def test_knn_k_and_temperature_each_change_the_vote():
    """One test image (class 0) whose nearest neighbour is class 0 (cosine 0.9) and next two are class 1 (0.8):
    with k=1 class 0 wins; with k=3, exp(0.9/T) > 2 exp(0.8/T) holds for T=0.07 (class 0) but not for T=1 (class 1)."""

    def unit(cosine):  # a 2-D unit vector at this cosine with [1, 0]
        return [cosine, math.sqrt(1 - cosine**2)]

    train = torch.tensor([unit(0.9), unit(0.8), [0.8, -0.6], [-1.0, 0.0]])
    train_labels = torch.tensor([0, 1, 1, 2])
    results = knn_classify(
        train, train_labels, torch.tensor([[1.0, 0.0]]), torch.tensor([0]), ks=(1, 3), temperatures=(0.07, 1.0)
    )
    top1 = {(r["k"], r["temperature"]): r["top1"] for r in results}
    assert top1 == {(1, 0.07): 1.0, (1, 1.0): 1.0, (3, 0.07): 1.0, (3, 1.0): 0.0}
    top5 = {(r["k"], r["temperature"]): r["top5"] for r in results}
    assert top5 == {(1, 0.07): 1.0, (1, 1.0): 1.0, (3, 0.07): 1.0, (3, 1.0): 1.0}


def test_adamw_runs_the_fused_kernel_on_cpu_with_the_reference_update():
    """A grid's optimizer step is one fused pass per member on CPU and CUDA; it must stay AdamW's update."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Linear(4, 3))
    reference = copy.deepcopy(model)
    optimizer = build_optimizer(model, "adamw", 0.05, weight_decay=0.1)
    expected = torch.optim.AdamW(
        [
            {"params": [p for p in reference.parameters() if p.ndim > 1], "weight_decay": 0.1},
            {"params": [p for p in reference.parameters() if p.ndim <= 1], "weight_decay": 0.0},
        ],
        lr=0.05,
        foreach=False,
    )
    assert optimizer.defaults["fused"] is True
    inputs = torch.randn(8, 6)
    for _ in range(3):
        for net, opt in ((model, optimizer), (reference, expected)):
            opt.zero_grad()
            net(inputs).square().mean().backward()
            opt.step()
    for got, want in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
