"""The default protocol's grid: members train as if alone, selection never reads the evaluation split, a killed
grid run resumes to the same end, and bad input fails before training with a message that says what to change."""

from __future__ import annotations

import ast
import json
import math

import numpy as np
import pytest
import torch
from conftest import tiny_backbone
from datasets import ClassLabel, Dataset, Features, Value
from safetensors.torch import load_file
from test_cache import single_thread  # noqa: F401
from transformers import TrainerCallback, set_seed

import hf_efficient_probing as hep
from hf_efficient_probing.probes import efficient as efficient_module
from hf_efficient_probing.training import grid as grid_module
from hf_efficient_probing.training.arguments import DataArguments, ProbeArguments, ProbingTrainingArguments
from hf_efficient_probing.training.data import DataError
from hf_efficient_probing.training.engine import GridSplits, RunOptions, train_grid
from hf_efficient_probing.training.grid import GridMember, ProbingGridModel
from hf_efficient_probing.training.job import check_arguments
from hf_efficient_probing.training.prepared import probing_collator
from hf_efficient_probing.training.recipes import (
    MAX_WARMUP_FRACTION,
    MIN_STEPS_PER_EPOCH,
    default_feature_layers,
    grid_arguments,
    resolve_recipe,
)
from hf_efficient_probing.training.resume import RunMismatchError
from hf_efficient_probing.training.selection import hold_out_for_selection
from hf_efficient_probing.training.trainer import ProbingTrainer, build_trainer

NUM_LABELS = 3
MEMBERS = [
    GridMember("ep", 2, 1e-2, (("num_queries", 4),)),
    GridMember("ep", 1, 3e-2, (("num_queries", 2),)),
    GridMember("linear", 2, 1e-1),
]
LR_GRID = [GridMember("ep", 2, rate, (("num_queries", 4),)) for rate in (3e-3, 1e-2, 3e-2)] + [
    GridMember("linear", 2, rate) for rate in (3e-2, 1e-1)
]  # members that read one view: their poolings run together


class Tokens(torch.utils.data.Dataset):
    """Tokens of a tiny ViT (the grid's layout: layers 1 and 2, [CLS] first) for images whose class shifts their
    brightness (by ``shift`` per class), so that the probes learn something within a few epochs."""

    def __init__(self, grid: ProbingGridModel, count: int, seed: int, labels=None, shift: float = 0.7):
        generator = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(NUM_LABELS, (count,), generator=generator) if labels is None else labels
        images = torch.randn(count, 3, 32, 32, generator=generator) + shift * self.labels[:, None, None, None]
        with torch.no_grad():
            self.tokens = grid.reader(grid.backbone, images).tokens

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"tokens": self.tokens[index], "labels": int(self.labels[index])}


def new_grid(backbone, members=MEMBERS) -> ProbingGridModel:
    return ProbingGridModel.from_backbone(backbone, members, seed=0, num_labels=NUM_LABELS)


def grid_args(output_dir, **overrides) -> ProbingTrainingArguments:
    settings = dict(
        output_dir=str(output_dir), num_train_epochs=4, per_device_train_batch_size=8, per_device_eval_batch_size=16,
        warmup_epochs=1, use_cpu=True, report_to="none", disable_tqdm=True, dataloader_num_workers=0,
    )  # fmt: skip
    return ProbingTrainingArguments(**{**settings, **overrides})


def run_grid(grid, args, train, selection, evaluation, **options):
    """``train_grid`` on three token splits, with the default recipe filled for ``args``."""
    return train_grid(
        grid, grid_arguments(args, len(train)), GridSplits(train, selection, evaluation), RunOptions(**options)
    )


def token_splits(grid: ProbingGridModel) -> tuple[Tokens, Tokens, Tokens]:
    """Train, selection and evaluation tokens in ``grid``'s layout."""
    return Tokens(grid, 40, seed=1), Tokens(grid, 12, seed=2), Tokens(grid, 12, seed=3)


@pytest.fixture
def data():
    backbone = tiny_backbone("vit")
    return backbone, *token_splits(new_grid(backbone))


@pytest.mark.parametrize("members", [MEMBERS, LR_GRID], ids=["kinds_and_layers", "learning_rates"])
def test_each_member_gets_what_an_independent_single_probe_trainer_run_gets(data, tmp_path, members):
    backbone = data[0]
    grid = new_grid(backbone, members)
    train, selection, evaluation = token_splits(grid)
    run_grid(grid, grid_args(tmp_path / "grid", keep_checkpoints=True), train, selection, evaluation)
    history = json.loads((tmp_path / "grid" / "trainer_state.json").read_text())["log_history"]
    last = load_file(next((tmp_path / "grid").glob("checkpoint-*")) / "model.safetensors")
    for index, member in enumerate(members):
        set_seed(0)
        alone = hep.AutoModelForEfficientProbing.from_backbone(
            backbone, probe=member.kind, feature_layers=[member.layer], num_labels=NUM_LABELS, **dict(member.settings)
        )
        args = grid_args(
            tmp_path / f"alone-{index}", optimizer="adamw", learning_rate=member.learning_rate, max_grad_norm=0.0,
            eval_strategy="epoch", logging_strategy="epoch", save_strategy="no", load_best_model_at_end=False,
        )  # fmt: skip
        trainer = build_trainer(alone, args, (grid.member_dataset(index, train), grid.member_dataset(index, selection)))
        trainer.train()
        alone_curve = [e["eval_accuracy"] for e in trainer.state.log_history if "eval_accuracy" in e]
        grid_curve = [
            e[f"selection_{member.name}_accuracy"] for e in history if f"selection_{member.name}_accuracy" in e
        ]
        assert grid_curve == alone_curve and len(alone_curve) == 4
        for key, value in alone.probe.state_dict().items():
            torch.testing.assert_close(last[f"heads.{index}.{key}"], value, rtol=1e-5, atol=1e-6)


def test_members_that_read_one_view_are_pooled_in_one_computation(data, monkeypatch):
    """The learning-rate grid's EP members run one attention over the tokens per batch, not one each (the grid's
    cost from the cache), and each one's logits are those of its own model."""
    grid = new_grid(data[0], LR_GRID)
    train = token_splits(grid)[0]
    attends = []
    original = efficient_module._attend
    monkeypatch.setattr(efficient_module, "_attend", lambda *args: attends.append(1) or original(*args))
    batch = probing_collator([train[i] for i in range(6)])
    grid.eval()
    with torch.no_grad():
        for index, head in enumerate(grid.heads):  # the members start equal (one seed): make them differ
            for parameter in head.parameters():
                parameter.add_(0.1 * index * torch.randn_like(parameter))
        logits = grid(tokens=batch["tokens"])["logits"]
        assert len(attends) == 1
        for index, model in enumerate(grid.member_models):
            view = grid.layout.view(batch["tokens"], *grid.views[index])
            torch.testing.assert_close(logits[:, index], model(tokens=view).logits, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("disable_tqdm", [True, False], ids=["print", "progress_bar"])
def test_printed_log_names_each_kinds_best_member_and_the_history_keeps_every_member(
    data, tmp_path, capsys, disable_tqdm
):
    backbone, train, selection, evaluation = data
    args = grid_args(tmp_path, num_train_epochs=2, disable_tqdm=disable_tqdm)
    run_grid(new_grid(backbone), args, train, selection, evaluation)
    out = capsys.readouterr().out.splitlines()
    printed = [ast.literal_eval(line) for line in out if line.startswith("{'selection_")]
    history = json.loads((tmp_path / "trainer_state.json").read_text())["log_history"]
    evaluations = [entry for entry in history if "selection_loss" in entry]
    assert not [entry for entry in history if any(key.startswith("eval_") for key in entry)], "selection is named so"
    assert len(printed) == len(evaluations) == 2
    for line, entry in zip(printed, evaluations, strict=True):
        assert not any(member.name in key for key in line for member in MEMBERS)  # no per-member columns
        for kind in ("ep", "linear"):
            scores = {m.name: entry[f"selection_{m.name}_accuracy"] for m in MEMBERS if m.kind == kind}
            assert float(line[f"selection_best_{kind}_accuracy"]) == pytest.approx(max(scores.values()), abs=1e-4)
            assert scores[line[f"selection_best_{kind}"]] == max(scores.values())


def _permuted(dataset: Tokens) -> Tokens:
    permuted = Tokens.__new__(Tokens)
    permuted.tokens, permuted.labels = dataset.tokens, (dataset.labels + 1) % NUM_LABELS
    return permuted


def test_selection_never_reads_the_evaluation_split(data, tmp_path):
    backbone, train, selection, evaluation = data
    runs = {}
    for name, evaluation_split in (("true", evaluation), ("permuted", _permuted(evaluation))):
        result = run_grid(new_grid(backbone), grid_args(tmp_path / name), train, selection, evaluation_split)
        runs[name] = result
    true, permuted = runs["true"], runs["permuted"]
    assert true.summary["members"] == permuted.summary["members"]  # same selection accuracies and epochs
    for kind in ("ep", "linear"):
        assert true.summary["chosen"][kind]["name"] == permuted.summary["chosen"][kind]["name"]
        saved = [(tmp_path / name / kind / "model.safetensors").read_bytes() for name in ("true", "permuted")]
        assert saved[0] == saved[1]
    # the saved probe is the chosen one, at its chosen epoch: each run's report is its accuracy on the split given
    model = hep.AutoModelForEfficientProbing.from_pretrained(tmp_path / "true" / "ep")
    index = [member.name for member in MEMBERS].index(true.summary["chosen"]["ep"]["name"])
    view = torch.stack([item["tokens"] for item in new_grid(backbone).member_dataset(index, evaluation)])
    with torch.no_grad():
        predictions = model(tokens=view).logits.argmax(-1)
    for run, labels in ((true, evaluation.labels), (permuted, _permuted(evaluation).labels)):
        assert run.metrics["ep"]["eval_accuracy"] == pytest.approx((predictions == labels).float().mean().item())
    chosen = true.summary["chosen"]["ep"]
    assert chosen["selection_accuracy"] == max(
        m["selection_accuracy"] for m in true.summary["members"] if m["kind"] == "ep"
    )
    assert (tmp_path / "true" / "run_summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "true" / "run_summary.md").read_text().splitlines()
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table if line.startswith("|")]
    assert ["ep", "2", "0.01"] in [row[:3] for row in rows]
    spent = true.summary["member_epochs"]
    assert (
        spent == true.summary["member_epochs_without_rungs"]
        and ["Member-epochs trained", f"{spent:g} (no rungs)"] in rows
    )


class KillAfterSave(TrainerCallback):
    """Stands in for a SIGKILL right after a checkpoint is complete."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def test_a_killed_grid_run_resumes_to_the_same_weights_and_history(data, tmp_path):
    backbone, train, selection, evaluation = data
    run_grid(new_grid(backbone), grid_args(tmp_path / "whole"), train, selection, evaluation)
    with pytest.raises(KeyboardInterrupt):
        run_grid(new_grid(backbone), grid_args(tmp_path / "killed"), train, selection, evaluation,
                   callbacks=[KillAfterSave(step=10)])  # fmt: skip
    assert [p.name for p in (tmp_path / "killed").glob("checkpoint-*")] == ["checkpoint-10"]
    other = [GridMember("ep", 2, 1e-3, (("num_queries", 4),)), *MEMBERS[1:]]  # another grid, same shapes
    with pytest.raises(RunMismatchError, match="checkpoint of another run: members differ"):
        run_grid(new_grid(backbone, other), grid_args(tmp_path / "killed"), train, selection, evaluation)
    run_grid(new_grid(backbone), grid_args(tmp_path / "killed"), train, selection, evaluation)  # the same command

    def timeless(path):  # minus timings, and the Trainer's mean train loss of the steps run in the last process
        history = json.loads((path / "trainer_state.json").read_text())["log_history"]
        dropped = ("runtime", "per_second", "train_loss")
        return [{k: v for k, v in e.items() if not any(d in k for d in dropped)} for e in history]

    assert timeless(tmp_path / "killed") == timeless(tmp_path / "whole")
    for kind in ("ep", "linear"):
        whole, resumed = (load_file(tmp_path / run / kind / "model.safetensors") for run in ("whole", "killed"))
        assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_a_grid_too_large_for_memory_fails_before_training(data, tmp_path, monkeypatch):
    backbone, train, selection, evaluation = data
    grid = new_grid(backbone)
    needed = grid.estimated_training_bytes(8, train[0]["tokens"].shape[0])
    monkeypatch.setattr(grid_module, "available_memory_bytes", lambda device: needed - 1)
    with pytest.raises(MemoryError, match=r"3 probes needs about .* GiB .*--per_device_train_batch_size"):
        run_grid(grid, grid_args(tmp_path / "out"), train, selection, evaluation)
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(grid_module, "available_memory_bytes", lambda device: needed)
    grid_module.check_grid_fits(grid, 8, train[0]["tokens"].shape[0], torch.device("cpu"))


def test_a_held_out_fraction_that_empties_a_class_names_it():
    features = Features({"label": ClassLabel(names=["cat", "dog", "eel"]), "x": Value("int32")})
    labels = [0] * 20 + [1] * 20 + [2] * 2
    dataset = Dataset.from_dict({"label": labels, "x": list(range(len(labels)))}, features=features)
    with pytest.raises(DataError, match=r"Class 'eel' \(label 2\) has 2 training images"):
        hold_out_for_selection(dataset, "label", 0.1, seed=0, class_names=["cat", "dog", "eel"])
    train, held = hold_out_for_selection(dataset.select(range(40)), "label", 0.1, seed=0)
    assert sorted(held["label"]) == [0, 0, 1, 1] and not set(train["x"]) & set(held["x"])
    again = hold_out_for_selection(dataset.select(range(40)), "label", 0.1, seed=0)[1]
    assert again["x"] == held["x"] != hold_out_for_selection(dataset.select(range(40)), "label", 0.1, seed=1)[1]["x"]


def test_paper_protocol_with_the_token_cache_explains_what_it_drops():
    with pytest.raises(ValueError, match="augmentation") as error:
        check_arguments(DataArguments(use_token_cache=True), ProbeArguments(protocol="paper"))
    assert "drop --use_token_cache" in str(error.value) and "drop --protocol paper" in str(error.value)


def test_recipe_follows_the_data_size_and_never_outgrows_the_split():
    tiny = resolve_recipe(ProbingTrainingArguments(output_dir="unused", use_cpu=True), "default", 30)
    steps = 30 // tiny.per_device_train_batch_size
    assert steps >= MIN_STEPS_PER_EPOCH and tiny.optimizer == "adamw"
    large = resolve_recipe(ProbingTrainingArguments(output_dir="unused", use_cpu=True), "default", 20_000)
    assert large.num_train_epochs < tiny.num_train_epochs  # fewer epochs when each has more steps
    assert default_feature_layers(12) == [9, 12] and default_feature_layers(4) == [3, 4]  # a middle block too
    paper = resolve_recipe(ProbingTrainingArguments(output_dir="unused", use_cpu=True), "paper", 30)
    assert paper.per_device_train_batch_size == 30 and (paper.optimizer, paper.num_train_epochs) == ("lars", 90)


def test_live_augmentation_crops_small_images_less():
    from PIL import Image
    from transformers import ViTImageProcessor

    from hf_efficient_probing.training.transforms import suited_crop_scale_min

    processor = ViTImageProcessor(size={"height": 224, "width": 224})

    def rows(side):
        return [{"image": Image.new("RGB", (side, side))} for _ in range(3)]

    assert suited_crop_scale_min(rows(28), "image", processor) == 0.5  # 8x upsampled digits: mild crops only
    assert suited_crop_scale_min(rows(500), "image", processor) == 0.08  # photos larger than the input: the paper's
    assert 0.08 < suited_crop_scale_min(rows(150), "image", processor) < 0.5


def test_warmup_never_exceeds_a_fixed_fraction_of_the_run(tmp_path):
    model = hep.AutoModelForEfficientProbing.from_backbone(tiny_backbone("vit"), probe="linear", num_labels=2)
    args = grid_args(
        tmp_path,
        optimizer="adamw",
        learning_rate=1.0,
        num_train_epochs=2,
        warmup_epochs=50,
        eval_strategy="no",
        load_best_model_at_end=False,
    )
    trainer = ProbingTrainer(model=model, args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=100)
    factors = [trainer.lr_scheduler.lr_lambdas[0](step) for step in range(101)]
    peak_step = int(np.argmax(factors))
    assert peak_step == round(100 * MAX_WARMUP_FRACTION) and math.isclose(factors[peak_step], 1.0)
