"""Seeds as grid members (``--seeds``): each seed's members train exactly as that seed's grid alone, on the one
backbone pass; the setting is chosen by its mean over seeds; the summary's mean and spread are those of the seeds;
and every evaluation figure carries its bootstrap interval over the evaluation images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_backbone
from safetensors.torch import load_file
from test_cache import single_thread  # noqa: F401
from test_grid import NUM_LABELS, Tokens, grid_args, run_grid

from hf_efficient_probing.demo import embedded_training_arguments, offline_inputs
from hf_efficient_probing.evaluation.intervals import bootstrap_interval, spread
from hf_efficient_probing.training.arguments import DataArguments, ModelArguments, ProbeArguments
from hf_efficient_probing.training.figures import BootstrapOptions, image_intervals, per_image_hits, spread_figures
from hf_efficient_probing.training.grid import GridMember, ProbingGridModel, SeedStreams, seeded_members
from hf_efficient_probing.training.job import check_arguments, run_probing
from hf_efficient_probing.training.selection import chosen_members

SETTINGS = [GridMember("ep", 2, 1e-2, (("num_queries", 4),)), GridMember("linear", 2, 1e-1)]  # one per kind
DATA_SEED = 42  # the Trainer's seed (TrainingArguments' default)


def seeded_grid(backbone, seeds) -> ProbingGridModel:
    return ProbingGridModel.from_backbone(backbone, seeded_members(SETTINGS, seeds), seed=0, num_labels=NUM_LABELS)


@pytest.fixture(scope="module")
def backbone():
    return tiny_backbone("vit")


@pytest.fixture(scope="module")
def splits(backbone):
    grid = seeded_grid(backbone, [0])
    return Tokens(grid, 40, seed=1), Tokens(grid, 16, seed=2), Tokens(grid, 24, seed=3)


def heads(path, grid) -> dict[str, dict]:
    """The trained heads of the last checkpoint of a grid run, by member name."""
    state = load_file(next(path.glob("checkpoint-*")) / "model.safetensors")
    return {
        member.name: {key.split(".", 2)[2]: value for key, value in state.items() if key.startswith(f"heads.{i}.")}
        for i, member in enumerate(grid.members)
    }


def test_each_seed_trains_as_its_grid_alone_and_the_summary_spread_is_theirs(backbone, splits, tmp_path):
    together = seeded_grid(backbone, [0, 1, 2])
    result = run_grid(together, grid_args(tmp_path / "together", keep_checkpoints=True), *splits)
    together_heads = heads(tmp_path / "together", together)
    alone = {}
    for seed in (0, 1, 2):
        grid = seeded_grid(backbone, [seed])
        alone[seed] = run_grid(grid, grid_args(tmp_path / f"alone{seed}", keep_checkpoints=True), *splits)
        for name, state in heads(tmp_path / f"alone{seed}", grid).items():
            for key, value in state.items():  # the same member, trained in a grid of three seeds or alone
                torch.testing.assert_close(together_heads[name][key], value, rtol=1e-5, atol=1e-6)
    for kind in ("ep", "linear"):
        chosen = result.summary["chosen"][kind]
        for figure in ("eval_accuracy", "eval_top5_accuracy"):
            values = [alone[seed].metrics[kind][figure] for seed in (0, 1, 2)]
            assert [chosen["per_seed"][str(seed)][figure] for seed in (0, 1, 2)] == values
            assert chosen[figure] == pytest.approx(np.mean(values))
            assert chosen[f"{figure}_std"] == pytest.approx(np.std(values, ddof=1))
        trained = [together_heads[f"{chosen['name']}_seed{seed}"] for seed in (0, 1, 2)]
        assert not torch.equal(trained[0]["classifier.weight"], trained[1]["classifier.weight"]), "seeds train apart"
    saved = json.loads((tmp_path / "together" / "ep" / "all_results.json").read_text())
    assert saved["seeds"] == [0, 1, 2] and saved["eval_accuracy"] == result.summary["chosen"]["ep"]["eval_accuracy"]
    table = (tmp_path / "together" / "run_summary.md").read_text()
    ep = result.summary["chosen"]["ep"]
    assert f"{100 * ep['eval_accuracy']:.2f} ± {100 * ep['eval_accuracy_std']:.2f}" in table
    assert "## Each seed" in table and "Over seeds" in table


def test_the_trainers_own_seed_trains_what_a_run_without_seeds_trains(backbone, splits, tmp_path):
    plain = ProbingGridModel.from_backbone(backbone, SETTINGS, seed=DATA_SEED, num_labels=NUM_LABELS)
    run_grid(plain, grid_args(tmp_path / "plain", keep_checkpoints=True), *splits)
    seeded = seeded_grid(backbone, [DATA_SEED])
    run_grid(seeded, grid_args(tmp_path / "seeded", keep_checkpoints=True), *splits)
    plain_heads, seeded_heads = heads(tmp_path / "plain", plain), heads(tmp_path / "seeded", seeded)
    for member in SETTINGS:
        name = f"{member.name}_seed{DATA_SEED}"
        assert all(torch.equal(plain_heads[member.name][k], v) for k, v in seeded_heads[name].items())


def test_seeds_change_the_initialisation_and_the_rows_of_every_batch(backbone, splits):
    grid = seeded_grid(backbone, [0, 1])
    first, second = (dict(head.named_parameters()) for head in list(grid.heads)[:2])  # ep under seeds 0 and 1
    assert any(not torch.equal(first[key], second[key]) for key in first)
    streams = SeedStreams(splits[0], [0, 1, DATA_SEED], DATA_SEED)
    orders = [order.tolist() for order in streams.orders]
    assert orders[2] == list(range(40)) and orders[0] != orders[1] and sorted(orders[0]) == list(range(40))
    item = streams[5]
    assert torch.equal(item["tokens"][0], splits[0][orders[0][5]]["tokens"])
    assert item["labels"].tolist() == [int(splits[0].labels[order[5]]) for order in orders]


def test_the_setting_is_chosen_by_its_mean_over_seeds_not_its_best_seed():
    members = seeded_members([GridMember("ep", 2, 1e-2), GridMember("ep", 2, 1e-1)], [0, 1])
    # lr 1e-2: seeds at 0.9 and 0.5 (mean 0.7); lr 1e-1: 0.75 and 0.75 (mean 0.75, no seed as good as 0.9)
    assert chosen_members(members, torch.tensor([0.9, 0.5, 0.75, 0.75])) == {"ep": [2, 3]}


def test_one_backbone_pass_serves_every_seed(tmp_path, monkeypatch):
    model_args, data_args = ModelArguments(), DataArguments(shots_per_class=4, max_eval_samples=8)
    data_args.token_cache_dir = str(tmp_path / "tokens")
    probe_args = ProbeArguments(probe="linear", feature_layers=[-1], learning_rates=[1e-1], seeds=[0, 1, 2])
    (backbone, processor), data = offline_inputs(model_args, data_args)
    images = []
    forward = backbone.forward

    def counting(*args, **kwargs):
        images.append(len(kwargs["pixel_values"] if "pixel_values" in kwargs else args[0]))
        return forward(*args, **kwargs)

    monkeypatch.setattr(backbone, "forward", counting)
    args = embedded_training_arguments(str(tmp_path / "run"), num_train_epochs=2, warmup_epochs=0)
    metrics = run_probing(model_args, data_args, probe_args, args, (backbone, processor), data)
    assert sum(images) == 16 + 16 + 8, "each image of train, selection and evaluation through the backbone once"
    assert metrics["seeds"] == [0, 1, 2] and len(metrics["per_seed"]) == 3


def test_the_bootstrap_interval_is_the_percentile_of_resampled_hits():
    ranked = np.array([[0, 1], [2, 0], [1, 2], [0, 2], [2, 1]] * 20)
    labels = np.array([0, 0, 1, 2, 2] * 20)
    hits = per_image_hits(ranked, labels)
    assert hits["eval_accuracy"].tolist() == [1, 0, 1, 0, 1] * 20
    assert hits["eval_top5_accuracy"].tolist() == [1, 1, 1, 1, 1] * 20
    figures = image_intervals(hits, BootstrapOptions(resamples=200, seed=3))
    draws = np.random.default_rng(3).integers(0, 100, size=(200, 100))  # by hand: the same draws, their means
    means = hits["eval_accuracy"][draws].mean(axis=1)
    assert figures["eval_accuracy_interval"] == pytest.approx(list(np.quantile(means, [0.025, 0.975])))
    assert figures["eval_top5_accuracy_interval"] == [1.0, 1.0]
    assert "200 resamples, seed 3" in figures["interval_method"]
    direct = bootstrap_interval(hits["eval_accuracy"], resamples=200, seed=3)
    assert [direct.low, direct.high] == figures["eval_accuracy_interval"]


def test_over_several_runs_the_interval_over_images_resamples_each_images_mean_hit():
    runs = ([1, 1, 0, 0, 1, 0, 1, 1, 0, 1], [0, 1, 1, 0, 1, 1, 0, 0, 0, 1], [1, 0, 0, 1, 1, 0, 1, 0, 0, 0])
    hits = [{"eval_accuracy": np.array(run, float), "eval_top5_accuracy": np.ones(10)} for run in runs]
    per_run = [{name: float(np.mean(values)) for name, values in run.items()} for run in hits]
    options = BootstrapOptions(resamples=300, seed=1)
    figures = spread_figures([0, 1, 2], per_run, hits, options)
    each_image = np.mean([run["eval_accuracy"] for run in hits], axis=0)  # by hand: every image's mean over runs
    direct = bootstrap_interval(each_image, resamples=300, seed=1)
    assert figures["eval_accuracy_interval"] == [direct.low, direct.high]
    first_run = bootstrap_interval(hits[0]["eval_accuracy"], resamples=300, seed=1)
    assert [first_run.low, first_run.high] != figures["eval_accuracy_interval"], "the mean over runs, not one run"
    over_runs = spread([run["eval_accuracy"] for run in per_run], over="seeds")
    assert figures["eval_accuracy"] == pytest.approx(over_runs["mean"]) == pytest.approx(direct.value)
    assert figures["eval_accuracy_seed_interval"] == over_runs["interval"]
    assert figures["per_seed"] == {"0": per_run[0], "1": per_run[1], "2": per_run[2]}


@pytest.mark.parametrize(
    ("probe", "message"),
    [
        ({"seeds": [0, 0]}, "--seeds must list distinct seeds"),
        ({"seeds": [0, 1], "protocol": "paper"}, "run it once per --seed"),
        ({"bootstrap_resamples": 0}, "--bootstrap_resamples must be at least 1"),
    ],
)
def test_bad_seeds_or_resamples_fail_before_anything_loads(probe, message):
    with pytest.raises(ValueError, match=message):
        check_arguments(DataArguments(), ProbeArguments(**{"probe": ["ep"], **probe}))
