"""Rungs of the grid: a member stopped at a rung costs nothing afterwards and changes no more, selection still never
reads the evaluation split, a killed run resumes with the same members stopped and added, the grid's edge is extended
and reported, and the rule keeps a member that starts slow and noisy and wins in the end."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from conftest import tiny_backbone
from safetensors.torch import load_file
from test_cache import single_thread  # noqa: F401
from test_grid import KillAfterSave, Tokens, _permuted, grid_args, new_grid, run_grid
from transformers import TrainerCallback

from hf_efficient_probing.hub import card_info_from_summary
from hf_efficient_probing.probes import efficient as efficient_module
from hf_efficient_probing.training.arguments import DataArguments, ProbeArguments
from hf_efficient_probing.training.grid import GridMember
from hf_efficient_probing.training.job import check_arguments, grid_rungs
from hf_efficient_probing.training.recipes import warmup_cosine_schedule
from hf_efficient_probing.training.rungs import Rungs, edge_report, edge_reserves, out_of_contention

EPOCHS = 6  # 5 steps each (40 images, batch 8): the default rungs fall after epochs 1 and 2
EP = [GridMember("ep", 2, rate, (("num_queries", 4),)) for rate in (1e-9, 1e-3, 1e-2, 1e-1)]
LINEAR = [GridMember("linear", 2, rate) for rate in (1e-9, 1e-2, 1e-1)]
REVISED = EP + LINEAR + edge_reserves(EP + LINEAR)  # the members at 1e-9 learn nothing: a rung stops them
RUNGS = Rungs(keep=1, extend_edge=True)


def easy_splits(grid):
    """Train, selection and evaluation tokens of images whose classes differ clearly: the members part ways within
    the first epochs, further than the 24 held-out images' noise."""
    return tuple(Tokens(grid, count, seed, shift=2.0) for count, seed in ((40, 1), (24, 2), (12, 3)))


@pytest.fixture
def backbone():
    return tiny_backbone("vit")


class Record(TrainerCallback):
    """At every evaluation, after the rung's decisions: each member's head, snapshot, optimizer state and learning
    rate, and how often each head classified a batch so far."""

    def __init__(self, grid):
        self.states, self.calls, self.queries, self.marks = {}, [0] * len(grid.members), [], {}
        for index, head in enumerate(grid.heads):
            head.classify = self.counting(head.classify, index)

    def counting(self, classify, index):
        def counted(*args, **kwargs):
            self.calls[index] += 1
            return classify(*args, **kwargs)

        return counted

    def on_evaluate(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.marks[state.global_step] = len(self.queries)
        self.states[state.global_step] = [
            {
                "head": clone(model.heads[index].state_dict()),
                "snapshot": clone(model.best_heads[index].state_dict()),
                "optimizer": [clone(optimizer.state[p]) for p in group["params"]],
                "lr": group["lr"],
                "calls": self.calls[index],
            }
            for index, group in enumerate(optimizer.param_groups)
        ]


def clone(tensors) -> dict:
    return {key: value.clone() if torch.is_tensor(value) else value for key, value in tensors.items()}


def same(first, second) -> bool:
    if isinstance(first, dict):
        return first.keys() == second.keys() and all(same(first[k], second[k]) for k in first)
    if isinstance(first, list):
        return len(first) == len(second) and all(same(a, b) for a, b in zip(first, second, strict=True))
    return torch.equal(first, second) if torch.is_tensor(first) else first == second


def test_a_stopped_member_costs_nothing_and_changes_no_more_after_its_rung(backbone, tmp_path, monkeypatch):
    grid = new_grid(backbone, REVISED)
    record, original = Record(grid), efficient_module._attend
    monkeypatch.setattr(
        efficient_module, "_attend", lambda q, *rest: record.queries.append(q.shape[1]) or original(q, *rest)
    )
    result = run_grid(grid, grid_args(tmp_path, num_train_epochs=EPOCHS), *easy_splits(grid), rungs=RUNGS,
                      callbacks=[record])  # fmt: skip
    summary, last = result.summary, max(record.states)
    stopped = {m["name"]: m for m in summary["members"] if m["stopped_epoch"] is not None}
    assert {"ep_num_queries4_layer2_lr1.00e-09", "linear_layer2_lr1.00e-09"} <= set(stopped)
    history = json.loads((tmp_path / "trainer_state.json").read_text())["log_history"]
    for index, member in enumerate(grid.members):
        if member.name not in stopped:
            continue
        rung = round(stopped[member.name]["stopped_epoch"] * 5)
        at_rung, at_end = record.states[rung][index], record.states[last][index]
        assert same(at_rung, {**at_end, "lr": at_rung["lr"]})  # weights, snapshot, AdamW moments and step, no call
        scored = [e["step"] for e in history if f"selection_{member.name}_accuracy" in e]
        assert scored[-1] == rung and scored == list(range(5, rung + 1, 5))  # no evaluation after its rung
        assert stopped[member.name]["epochs_trained"] == stopped[member.name]["stopped_epoch"]
    # one pooled EP attention per batch, over the queries of the EP members training then (4 each)
    training_ep = sum(m["kind"] == "ep" and m["stopped_epoch"] is None for m in summary["members"])
    after_rungs = record.queries[record.marks[10] : record.marks[last]]
    assert set(record.queries[: record.marks[5]]) == {4 * len(EP)} and set(after_rungs) == {4 * training_ep}
    assert training_ep < len(EP)
    assert summary["member_epochs"] == pytest.approx(sum(m["epochs_trained"] for m in summary["members"]))
    assert summary["member_epochs_without_rungs"] == len(EP + LINEAR) * EPOCHS
    table = (tmp_path / "run_summary.md").read_text()
    assert (
        "1-6" not in table
        and f"| 0-{stopped['linear_layer2_lr1.00e-09']['stopped_epoch']:g} (stopped at a rung)" in table
    )


def table_rows(path) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in path.read_text().splitlines()
        if line.startswith("|")
    ]


def test_selection_never_reads_the_evaluation_split_with_rungs(backbone, tmp_path):
    """The permuted-labels test of test_grid.py with members stopped and added at the rungs: the same members stop
    and start at the same rungs, the same probes are chosen and saved, whatever the evaluation labels."""
    runs = {}
    for name in ("true", "permuted"):
        grid = new_grid(backbone, REVISED)
        train, selection, evaluation = easy_splits(grid)
        evaluation = evaluation if name == "true" else _permuted(evaluation)
        runs[name] = run_grid(grid, grid_args(tmp_path / name, num_train_epochs=EPOCHS), train, selection,
                              evaluation, rungs=RUNGS).summary  # fmt: skip
    assert runs["true"]["members"] == runs["permuted"]["members"]  # with their stop and start epochs
    assert any(m["stopped_epoch"] is not None for m in runs["true"]["members"])
    for kind in ("ep", "linear"):
        assert runs["true"]["chosen"][kind]["name"] == runs["permuted"]["chosen"][kind]["name"]
        saved = [(tmp_path / name / kind / "model.safetensors").read_bytes() for name in ("true", "permuted")]
        assert saved[0] == saved[1]


def test_a_killed_run_resumes_with_the_same_members_stopped_and_added(backbone, tmp_path):
    def run(name, **options):
        grid = new_grid(backbone, REVISED)
        args = grid_args(tmp_path / name, num_train_epochs=EPOCHS, keep_checkpoints=True)
        return run_grid(grid, args, *easy_splits(grid), rungs=RUNGS, **options)

    whole = run("whole").summary
    with pytest.raises(KeyboardInterrupt):
        run("killed", callbacks=[KillAfterSave(step=15)])  # after both rungs: the checkpoint holds their decisions
    resumed = run("killed").summary
    assert any(m["stopped_epoch"] is not None for m in whole["members"])
    assert any(m["started_epoch"] > 0 for m in whole["members"])  # a reserve started at a rung, trained after it
    assert resumed["members"] == whole["members"]

    def timeless(path):
        history = json.loads((path / "trainer_state.json").read_text())["log_history"]
        dropped = ("runtime", "per_second", "train_loss")
        return [{k: v for k, v in e.items() if not any(d in k for d in dropped)} for e in history]

    assert timeless(tmp_path / "killed") == timeless(tmp_path / "whole")
    final = [load_file(tmp_path / name / "checkpoint-30" / "model.safetensors") for name in ("whole", "killed")]
    assert final[0].keys() == final[1].keys() and all(torch.equal(final[0][k], final[1][k]) for k in final[0])


def test_a_rung_extends_the_grid_beyond_its_edge_for_the_epochs_left(backbone, tmp_path):
    """The linear sweep's best member after epoch 2 has its largest rate, far ahead of the others: its reserve beyond
    the edge waits untouched until then, then trains for the 4 epochs left on the recipe's schedule compressed into
    them, and the summary says when it trained."""
    grid = new_grid(backbone, REVISED)
    initial = clone(grid.heads[-1].state_dict())
    record = Record(grid)
    summary = run_grid(grid, grid_args(tmp_path, num_train_epochs=EPOCHS), *easy_splits(grid), rungs=RUNGS,
                       callbacks=[record]).summary  # fmt: skip
    reserve = grid.members[-1]
    assert reserve.kind == "linear" and reserve.learning_rate == 1.0 and reserve.reserve
    (added,) = [m for m in summary["members"] if m["name"] == reserve.name]
    assert (added["started_epoch"], added["epochs_trained"]) == (2, EPOCHS - 2)
    states = [record.states[step][-1] for step in sorted(record.states)]
    assert all(same(state["head"], initial) and state["optimizer"] == [{}] * 2 for state in states[:2])
    assert not same(states[-1]["head"], initial)
    assert [state["lr"] for state in states[:2]] == [0.0, 0.0] and 0 < states[2]["lr"] <= 1.0
    assert states[-1]["lr"] == pytest.approx(0.0, abs=1e-9)  # its cosine ends with the run's
    assert ["linear", "2", "1", "2-6 (added beyond the grid's edge)"] in [
        [row[i] for i in (0, 1, 2, 5)] for row in table_rows(tmp_path / "run_summary.md") if len(row) == 6
    ]
    assert summary["member_epochs"] == pytest.approx(sum(m["epochs_trained"] for m in summary["members"]))


def test_a_schedule_that_starts_late_is_the_whole_schedule_compressed_into_the_steps_left():
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 2.0} for _ in range(3)]
    optimizer = torch.optim.SGD(groups, lr=2.0)
    first = {0: 0, 1: 8, 2: -1}
    schedule = warmup_cosine_schedule(optimizer, 1, 5, 20, first_step=first.get)  # 4 warm-up steps of 20
    lrs = []
    for _ in range(21):
        lrs.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        schedule.step()
    whole = [lr[0] for lr in lrs]
    assert whole[:5] == [0.0, 0.5, 1.0, 1.5, 2.0] and whole[20] == pytest.approx(0.0, abs=1e-12)
    late = [lr[1] for lr in lrs]
    assert late[:9] == [0.0] * 9  # nothing before it starts, then 20 steps' schedule over the 12 left
    assert late[9:] == pytest.approx([2.0 * schedule_factor(20 * k / 12, 4, 20) for k in range(1, 13)])
    assert [lr[2] for lr in lrs] == [0.0] * 21


def schedule_factor(step: float, warmup: int, total: int) -> float:
    if step < warmup:
        return step / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def test_the_chosen_rate_at_the_grids_edge_is_reported_with_what_to_do(backbone, tmp_path, caplog):
    """Without rungs the grid is not extended: the chosen EP rate, the largest, is reported in the log, the summary
    and the card, with the flag that extends it; with rungs, a chosen rate that is itself a step beyond the edge
    says so."""
    members = [GridMember("ep", 2, rate, (("num_queries", 4),)) for rate in (1e-9, 1e-1)]
    grid = new_grid(backbone, members)
    with caplog.at_level(logging.WARNING, logger="hf_efficient_probing.training.engine"):
        summary = run_grid(grid, grid_args(tmp_path, num_train_epochs=3), *easy_splits(grid)).summary
    edge = summary["chosen"]["ep"]["grid_edge"]
    assert summary["chosen"]["ep"]["learning_rate"] == 0.1 and edge["side"] == "largest"
    assert "--extend_grid_edge" in edge["note"] and "--learning_rates" in edge["note"]
    assert edge["note"] in caplog.text and edge["note"] in (tmp_path / "run_summary.md").read_text()
    card = card_info_from_summary(json.loads((tmp_path / "run_summary.json").read_text()), dataset="tester/data")
    assert edge["note"] in card.notes
    beyond = members + [GridMember("ep", 2, 1e7, (("num_queries", 4),), reserve=True)]
    trained, waiting = [True] * 3, [False] * 3
    assert "already one step beyond" in edge_report(beyond, 2, trained, waiting, True)["note"]
    assert "did not train" in edge_report(beyond, 1, [True, True, False], [False, False, True], True)["note"]
    assert edge_report(beyond, 1, trained, waiting, True) is None  # inside the grid once the reserve trained


def test_each_sweep_gets_one_reserve_beyond_each_edge():
    sweep = [GridMember("ep", 3, rate) for rate in (1e-3, 3e-3, 1e-2)] + [GridMember("linear", 3, 1e-2)]
    reserves = edge_reserves(sweep)
    assert [(m.kind, m.learning_rate, m.reserve) for m in reserves] == [("ep", 3.33e-4, True), ("ep", 0.0333, True)]


def test_rungs_fall_after_whole_epochs_and_bad_settings_say_what_to_pass():
    assert Rungs().epochs(28) == [3, 9] and Rungs().epochs(6) == [1, 2] and Rungs().epochs(2) == [1]
    assert Rungs(fractions=(0.5, 0.01)).epochs(10) == [1, 5]
    with pytest.raises(ValueError, match=r"--prune_rungs are fractions .* in \(0, 1\)"):
        Rungs(fractions=(1.5,))
    with pytest.raises(ValueError, match="--prune_keep must keep at least 1"):
        Rungs(keep=0)
    assert grid_rungs(ProbeArguments(prune=False, extend_grid_edge=False)) is None
    with pytest.raises(ValueError, match="--prune_keep is read only by the default protocol"):
        check_arguments(DataArguments(), ProbeArguments(protocol="paper", prune_keep=3))


# The README's digits run without rungs (`--probe ep linear`, 1,171 train / 129 held out, 28 epochs): each EP
# member's correct held-out images after each of the first 9 epochs, and its best over the 28. The grid's largest
# rate at layer 3 is noisy early (36 correct after epoch 4, 37 after epoch 8) and wins in the end, by one image.
DIGITS_EP = {
    (3, 1.5e-05): ([13, 12, 12, 15, 14, 14, 17, 20, 20], 34),
    (3, 5e-05): ([14, 13, 18, 25, 28, 35, 47, 52, 53], 67),
    (3, 0.00015): ([16, 17, 27, 45, 57, 69, 73, 75, 82], 92),
    (3, 0.0005): ([20, 24, 52, 72, 86, 89, 92, 97, 95], 106),
    (3, 0.0015): ([23, 42, 91, 92, 91, 96, 99, 100, 83], 117),
    (3, 0.005): ([27, 68, 79, 105, 92, 84, 99, 91, 87], 119),
    (3, 0.015): ([49, 70, 88, 106, 82, 88, 94, 30, 86], 119),
    (3, 0.05): ([66, 79, 80, 36, 101, 78, 93, 37, 69], 123),
    (4, 1.5e-05): ([14, 12, 12, 17, 16, 16, 17, 17, 17], 26),
    (4, 5e-05): ([15, 13, 20, 22, 24, 33, 39, 45, 47], 67),
    (4, 0.00015): ([15, 19, 33, 38, 49, 64, 74, 76, 83], 93),
    (4, 0.0005): ([19, 30, 53, 75, 80, 85, 89, 96, 93], 107),
    (4, 0.0015): ([22, 48, 77, 92, 92, 94, 97, 104, 89], 117),
    (4, 0.005): ([28, 63, 91, 101, 64, 88, 95, 99, 94], 118),
    (4, 0.015): ([52, 71, 84, 95, 92, 93, 101, 43, 81], 121),
    (4, 0.05): ([67, 74, 100, 70, 74, 91, 116, 59, 104], 122),
}


def test_a_member_that_starts_slow_and_noisy_and_wins_is_kept_by_the_rungs():
    """The default rungs of a 28-epoch run (after epochs 3 and 9) on the digits curves: the winner, 15 points behind
    its kind's best after epoch 3 and 12 after epoch 9, trains on; the slow members stop, and the choice over every
    member's best is the run's own."""
    members = [GridMember("ep", layer, rate) for layer, rate in DIGITS_EP]
    correct = [curve for curve, _ in DIGITS_EP.values()]
    rungs, held_out = Rungs(), 129
    assert rungs.epochs(28) == [3, 9]
    stopped: dict[int, int] = {}
    for epoch in rungs.epochs(28):
        best = [max(curve[: stopped.get(i, epoch)]) / held_out for i, curve in enumerate(correct)]
        training = [i not in stopped for i in range(len(members))]
        for index in out_of_contention(members, best, training, [True] * len(members), rungs, held_out):
            stopped[index] = epoch
    winner = members.index(GridMember("ep", 3, 0.05))
    assert winner not in stopped
    assert {members.index(GridMember("ep", layer, 1.5e-05)) for layer in (3, 4)} <= set(stopped)
    final = [max(curve[: stopped[i]]) if i in stopped else total for i, (curve, total) in enumerate(DIGITS_EP.values())]
    assert max(range(len(members)), key=final.__getitem__) == winner
    spent = sum(stopped.get(i, 28) for i in range(len(members)))
    assert spent < 0.5 * 28 * len(members)  # more than half the member-epochs saved
