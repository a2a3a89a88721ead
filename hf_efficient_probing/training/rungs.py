"""Rungs of a grid run: the epochs where members out of contention stop training, and where a kind whose best member
sits at the edge of the learning-rate grid gets the next rate beyond that edge.

Successive halving (Jamieson & Talwalkar, 2016; Hyperband, Li et al., 2018; ASHA, Li et al., 2020) stops the worst
members of a search at a few rungs and spends the budget on the rest. A probing grid is a small, structured search
(per kind and layer, one learning-rate sweep), so the rule here is more careful than "keep the best half":

- a member is judged on its best held-out selection accuracy so far (the figure the final choice reads), never on
  the evaluation split;
- it is in contention while it is within ``margin`` of its kind's best, widened by the selection split's own noise
  (two binomial standard errors of the best's accuracy on the held-out images): a difference that a few images
  make proves nothing; the best ``keep`` members of every kind and layer are in contention too (ties included), so
  a layer is never dropped on the evidence of a few epochs;
- a member out of contention stops only when a larger learning rate of its own sweep is in contention: short runs
  favour small rates (Wu et al., "Understanding Short-Horizon Bias in Stochastic Meta-Optimization", ICLR 2018),
  and a large rate that is behind early may be only noisy: on sklearn's digits the chosen EP member (the grid's
  largest rate) was 15 points behind its kind's best after epoch 3 of 28 and 12 behind after epoch 9, then won by
  one image;
- members added beyond the edge are never stopped: they have trained fewer epochs than the others.

A stopped member costs nothing afterwards (`training.grid.ProbingGridModel`: no forward, no backward, no optimizer
step, no evaluation) and keeps its best-epoch snapshot, so the final choice, the best held-out accuracy over every
member's snapshot, is unchanged in form. The decisions live in the grid's buffers, inside every checkpoint, so a
killed run resumes with the same members stopped at the same rungs.

The grid's edge: when a kind's best member has the largest (or smallest) rate its kind and layer train, a larger
(smaller) one may be better still. The run always says so (log, summary, card), with what to do. With
``extend_edge`` the grid also holds one reserve member beyond each edge of every sweep, idle (it costs nothing)
until a rung finds the kind's best at that edge; it then trains for the rest of the run with the recipe's warm-up
and cosine compressed into the steps left, and the summary says it had fewer epochs. It is off by default (the
report names ``--extend_grid_edge``): on the README's four reference runs it trained 4 reserves for 123 extra
member-epochs, and the one it led to choosing (Fashion-MNIST 2,000, EP) was 2 points better on the held-out split
and 0.8 points worse on the evaluation split; widening ``--learning_rates`` trains the next rates for the whole
run instead.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from transformers import TrainerCallback

from .grid import GridMember

logger = logging.getLogger(__name__)

DEFAULT_FRACTIONS = (1 / 9, 1 / 3)  # of the run's epochs, as in successive halving with a reduction factor of 3
DEFAULT_KEEP = 2
DEFAULT_MARGIN = 0.05
NOISE_STANDARD_ERRORS = 2.0


@dataclass(frozen=True)
class Rungs:
    """Where and how a grid run revises its members.

    Attributes:
        fractions: the rungs, as fractions of the run's epochs (each falls after a whole epoch, at least one epoch
            in and before the last).
        prune: stop the members out of contention at each rung.
        keep: members every kind and layer keeps at a rung, at least (the best ones by selection accuracy).
        margin: a member within this much selection accuracy of its kind's best (a fraction: 0.05 is 5 points),
            plus the selection split's noise, is kept.
        extend_edge: train the next learning rate beyond the grid's edge from the rung that finds a kind's best
            member at that edge.
    """

    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    prune: bool = True
    keep: int = DEFAULT_KEEP
    margin: float = DEFAULT_MARGIN
    extend_edge: bool = False

    def __post_init__(self):
        object.__setattr__(self, "fractions", tuple(sorted(self.fractions)))
        if not all(0 < fraction < 1 for fraction in self.fractions):
            raise ValueError(
                f"--prune_rungs are fractions of the run's epochs, each in (0, 1); got {list(self.fractions)}."
            )
        if self.keep < 1:
            raise ValueError(f"--prune_keep must keep at least 1 member per kind and layer; got {self.keep}.")
        if not 0 <= self.margin < 1:
            raise ValueError(f"--prune_margin is a fraction of selection accuracy in [0, 1); got {self.margin}.")

    @property
    def active(self) -> bool:
        return bool(self.fractions) and (self.prune or self.extend_edge)

    def epochs(self, num_train_epochs: float) -> list[int]:
        """The epochs after which the rungs fall: whole epochs, at least the first and before the last."""
        last = math.ceil(num_train_epochs) - 1
        return sorted({min(max(1, round(fraction * num_train_epochs)), last) for fraction in self.fractions} - {0})

    def record(self, num_train_epochs: float) -> dict:
        """The rungs as the run summary records them."""
        return {
            "epochs": self.epochs(num_train_epochs),
            "prune": self.prune,
            "keep": self.keep,
            "margin": self.margin,
            "extend_edge": self.extend_edge,
        }


def sweep_key(member: GridMember) -> tuple:
    """The learning-rate sweep a member belongs to: its kind, layer and own settings."""
    return member.kind, member.layer, member.settings


def edge_reserves(members: Sequence[GridMember]) -> list[GridMember]:
    """One reserve member beyond each edge of every learning-rate sweep of two rates or more: the geometric
    progression of its two outermost rates continued by one step (3 significant digits, as the grid's rates)."""
    sweeps: dict[tuple, list[GridMember]] = {}
    for member in members:
        sweeps.setdefault(sweep_key(member), []).append(member)
    reserves = []
    for sweep in sweeps.values():
        rates = sorted({member.learning_rate for member in sweep})
        if len(rates) < 2:
            continue
        below, above = rates[0] ** 2 / rates[1], rates[-1] ** 2 / rates[-2]
        for rate in (below, above):
            reserves.append(replace(sweep[0], learning_rate=float(f"{rate:.3g}"), reserve=True))
    return reserves


def out_of_contention(
    members: Sequence[GridMember],
    accuracies: Sequence[float],
    training: Sequence[bool],
    from_start: Sequence[bool],
    rungs: Rungs,
    selection_samples: int,
) -> list[int]:
    """The members to stop at a rung (``accuracies``: each member's best selection accuracy so far).

    A training member is in contention when it is within ``rungs.margin`` plus the selection split's noise of its
    kind's best, or among the best ``rungs.keep`` of its kind and layer (ties included). One out of contention is
    stopped when a member of its own sweep with a larger learning rate is in contention: it is slower than a rate
    that is doing well, and a decaying learning rate only slows it further. A member whose rate is larger than every
    one in contention in its sweep is kept: early in a run a large rate is noisy (a winner can be 30 points behind
    after a few epochs, then ahead once the cosine has brought its rate down), and only the end of the run tells.
    Members added beyond the edge are never stopped (fewer epochs)."""
    best: dict[str, float] = {}
    for member, accuracy, alive in zip(members, accuracies, training, strict=True):
        if alive:
            best[member.kind] = max(best.get(member.kind, -math.inf), accuracy)
    layers: dict[tuple[str, int], list[int]] = {}
    for index, member in enumerate(members):
        if training[index]:
            layers.setdefault((member.kind, member.layer), []).append(index)
    contention = set()
    for indices in layers.values():
        ranked = sorted((accuracies[i] for i in indices), reverse=True)
        cutoff = ranked[min(rungs.keep, len(ranked)) - 1]
        for index in indices:
            kind_best = best[members[index].kind]
            near = accuracies[index] >= kind_best - rungs.margin - selection_noise(kind_best, selection_samples)
            if near or accuracies[index] >= cutoff:
                contention.add(index)
    return [
        index
        for index, member in enumerate(members)
        if training[index]
        and from_start[index]
        and index not in contention
        and any(
            sweep_key(members[i]) == sweep_key(member) and members[i].learning_rate > member.learning_rate
            for i in contention
        )
    ]


def selection_noise(accuracy: float, samples: int) -> float:
    """``NOISE_STANDARD_ERRORS`` binomial standard errors of an accuracy measured on ``samples`` images."""
    accuracy = min(max(accuracy, 0.0), 1.0)
    return NOISE_STANDARD_ERRORS * math.sqrt(accuracy * (1 - accuracy) / max(samples, 1))


def grid_edge(members: Sequence[GridMember], index: int, trained: Sequence[bool]) -> str | None:
    """``"largest"`` or ``"smallest"`` when member ``index``'s rate is that edge of the rates its sweep trained (two
    or more); else ``None``."""
    key = sweep_key(members[index])
    rates = sorted(
        member.learning_rate for member, done in zip(members, trained, strict=True) if done and sweep_key(member) == key
    )
    rate = members[index].learning_rate
    if len(rates) < 2:
        return None
    return "largest" if rate == rates[-1] else "smallest" if rate == rates[0] else None


def beyond_the_edge(
    members: Sequence[GridMember], accuracies: Sequence[float], training: Sequence[bool], waiting: Sequence[bool]
) -> list[int]:
    """The reserve members to start at a rung: per kind, the one just beyond the edge of the sweep whose rate the
    kind's best training member has, when that rate is the sweep's largest (or smallest) trained one and that member
    is ahead of every other member of its kind (a tie says nothing about which side is better)."""
    trained = [not wait for wait in waiting]
    start = []
    for kind in dict.fromkeys(member.kind for member in members):
        scores = sorted(
            ((accuracies[i], i) for i, m in enumerate(members) if training[i] and m.kind == kind), reverse=True
        )
        if not scores or (len(scores) > 1 and scores[1][0] >= scores[0][0]):
            continue
        best = scores[0][1]
        side, rate = grid_edge(members, best, trained), members[best].learning_rate
        for reserve, member in enumerate(members):
            beyond = member.learning_rate > rate if side == "largest" else member.learning_rate < rate
            if side and waiting[reserve] and sweep_key(member) == sweep_key(members[best]) and beyond:
                start.append(reserve)
    return start


def edge_report(
    members: Sequence[GridMember], index: int, trained: Sequence[bool], waiting: Sequence[bool], extend_edge: bool
) -> dict | None:
    """What the summary, the log and the card say when chosen member ``index`` has the largest or smallest rate its
    sweep trained: which edge, and what to do; ``None`` inside the grid."""
    side = grid_edge(members, index, trained)
    if side is None:
        return None
    member = members[index]
    further = "larger" if side == "largest" else "smaller"
    where = f"The chosen {member.kind} learning rate {member.learning_rate:.3g} (layer {member.layer}) is the {side}"
    key = sweep_key(member)
    idle = any(waiting[i] and sweep_key(m) == key for i, m in enumerate(members))
    if member.reserve:
        advice = f"{where} this run trained, already one step beyond the grid's edge: a {further} one may do better."
    elif extend_edge and idle:
        advice = (
            f"{where} of the grid; no rung found it the best of its kind, so the run did not train the rate beyond."
        )
    else:
        advice = (
            f"{where} of the grid: a {further} one may do better. --extend_grid_edge trains the next rate from the "
            "rung that finds a kind's best member at an edge."
        )
    return {"side": side, "note": f"{advice} Widen --learning_rates to train {further} rates from the start."}


class GridRungs(TrainerCallback):
    """At each rung (after the selection split's evaluation and `selection.GridSelection`'s snapshots of that
    epoch, before the epoch's checkpoint): stop the members out of contention, start the reserves beyond an edge.
    Works on a `training.grid.ProbingGridModel`; the decisions are stored in its buffers.

    With ``--seeds`` a rung judges settings (kind x layer x learning rate), each by its mean over seeds, and stops
    or starts every seed of a setting together: the final choice reads that mean (`selection.chosen_members`), and a
    setting with some seeds stopped early would have a mean over members trained for different lengths."""

    def __init__(self, rungs: Rungs, rung_steps: Sequence[int], selection_samples: int):
        self.rungs, self.steps, self.selection_samples = rungs, set(rung_steps), selection_samples

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if state.global_step not in self.steps or not hasattr(model, "stop_members"):
            return
        seeds_of: dict[GridMember, list[int]] = {}
        for index, member in enumerate(model.members):
            seeds_of.setdefault(member.setting, []).append(index)
        settings, groups = list(seeds_of), list(seeds_of.values())
        best = model.best_accuracy.tolist()
        accuracies = [sum(best[i] for i in group) / len(group) for group in groups]
        training, waiting, from_start = (
            [mask[group[0]] for group in groups]  # every seed of a setting starts and stops with it
            for mask in (model.training_mask(), model.waiting_mask(), model.from_start_mask())
        )
        if self.rungs.prune:
            stop = out_of_contention(settings, accuracies, training, from_start, self.rungs, self.selection_samples)
            model.stop_members([i for s in stop for i in groups[s]], state.global_step)
            if stop:
                logger.info("Rung at epoch %g: stopped %s", state.epoch, ", ".join(settings[s].name for s in stop))
        if self.rungs.extend_edge:
            training = [model.training_mask()[group[0]] for group in groups]
            start = beyond_the_edge(settings, accuracies, training, waiting)
            model.start_members([i for s in start for i in groups[s]], state.global_step)
            for index in start:
                logger.info(
                    "Rung at epoch %g: the best %s member is at the edge of the learning-rate grid; training %s "
                    "for the epochs left",
                    state.epoch,
                    settings[index].kind,
                    settings[index].name,
                )
