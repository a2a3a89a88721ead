"""Low-shot episodes (``--shots_per_class k --episodes n``): n seeded draws of k training images per class, each
trained and chosen on its own, reported as the mean and the interval over draws (as ELEVATER's 5/20/50-shot runs
with several seeds and DINOv2's k-NN ``n_tries`` do): one draw of k images per class is one sample of a very noisy
quantity.

Episode ``e`` draws with seed ``--subset_seed + e`` (`data.low_shot_indices`: the same labels and seed, the same
images). Its selection split comes from its own draw, stratified (``--selection_fraction`` of every class, at least
`selection.MIN_SELECTION_PER_CLASS`), when k leaves a training image after that; for a smaller k nothing can be held
out of the draw, so the episode selects on `selection.MIN_SELECTION_PER_CLASS` images per class drawn, with the same
seed, from the rest of train (outside its draw) -- more labelled images than k per class, which every output names
(``selection_rule``). The backbone runs once over the union of every episode's images (one token cache); each
episode trains a grid of its own on its rows, initialised from its seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .data import DataError, low_shot_indices
from .selection import MIN_SELECTION_PER_CLASS, indices_fingerprint, selection_mask

FROM_THE_DRAW = "held out from the episode's own draw: {fraction} of every class (at least {minimum}), same seed"
OUTSIDE_THE_DRAW = (
    "k = {shots} is too small to hold out from, so {minimum} images per class drawn (same seed) from the rest of "
    "train, outside the episode's draw: the choice of layer, learning rate and epoch reads images beyond the k shots"
)


@dataclass(frozen=True)
class Episode:
    """One low-shot draw: its seed, its training and selection rows (positions in the union of every episode's
    rows), and the rule its selection split followed."""

    index: int
    seed: int
    train_rows: tuple[int, ...]
    selection_rows: tuple[int, ...]
    selection_rule: str

    def record(self, union: np.ndarray) -> dict:
        """What the summary keeps of the episode: its seed, its rule, and which rows of train it read."""
        train, selection = union[list(self.train_rows)], union[list(self.selection_rows)]
        return {
            "episode": self.index,
            "seed": self.seed,
            "train_samples": len(train),
            "selection_samples": len(selection),
            "selection_rule": self.selection_rule,
            "train_rows_fingerprint": indices_fingerprint(train),
            "selection_rows_fingerprint": indices_fingerprint(selection),
        }


def draw_episodes(
    labels: Sequence[int],
    shots: int,
    episodes: int,
    seed: int = 0,
    fraction: float = 0.1,
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[Episode]]:
    """``(union, episodes)``: the sorted rows of train that any episode reads, and each episode's rows within it."""
    if episodes < 1:
        raise DataError(f"--episodes must be at least 1, got {episodes}.")
    labels = np.asarray(labels)
    drawn = []
    for index in range(episodes):
        episode_seed = seed + index
        draw = np.asarray(low_shot_indices(labels, shots, None, episode_seed))
        if shots > MIN_SELECTION_PER_CLASS:
            held = selection_mask(labels[draw], fraction, episode_seed, class_names)
            train, selection = draw[~held], draw[held]
            rule = FROM_THE_DRAW.format(fraction=fraction, minimum=MIN_SELECTION_PER_CLASS)
        else:
            rest = np.setdiff1d(np.arange(len(labels)), draw)
            selection = rest[low_shot_indices(labels[rest], MIN_SELECTION_PER_CLASS, None, episode_seed)]
            train, rule = draw, OUTSIDE_THE_DRAW.format(shots=shots, minimum=MIN_SELECTION_PER_CLASS)
        drawn.append((episode_seed, train, selection, rule))
    union = np.unique(np.concatenate([np.concatenate([train, selection]) for _, train, selection, _ in drawn]))
    position = {row: place for place, row in enumerate(union.tolist())}
    return union, [
        Episode(
            index,
            episode_seed,
            tuple(position[row] for row in train.tolist()),
            tuple(position[row] for row in selection.tolist()),
            rule,
        )
        for index, (episode_seed, train, selection, rule) in enumerate(drawn)
    ]
