"""Low-shot episodes: each draws what its seed says, selects on its own draw (or, for k too small, says where)."""

from __future__ import annotations

import numpy as np

from hf_efficient_probing.training.data import low_shot_indices
from hf_efficient_probing.training.episodes import draw_episodes

LABELS = np.repeat(np.arange(4), 12)  # 4 classes of 12 images


def test_each_episode_draws_what_its_seed_says_and_selects_inside_its_draw():
    union, episodes = draw_episodes(LABELS, 5, 3, seed=7, fraction=0.2)
    for index, episode in enumerate(episodes):
        assert episode.seed == 7 + index
        rows = np.sort(union[list(episode.train_rows + episode.selection_rows)])
        assert rows.tolist() == low_shot_indices(LABELS, 5, None, episode.seed), "its seed's draw, nothing else"
        assert not set(episode.train_rows) & set(episode.selection_rows)
        assert np.bincount(LABELS[union[list(episode.selection_rows)]]).tolist() == [2] * 4
        assert "own draw" in episode.selection_rule
    assert len({episode.train_rows for episode in episodes}) == 3, "the draws differ"


def test_a_k_too_small_to_hold_out_from_selects_outside_its_draw_and_says_so():
    union, (episode,) = draw_episodes(LABELS, 2, 1, seed=0)
    train, selection = union[list(episode.train_rows)], union[list(episode.selection_rows)]
    assert train.tolist() == low_shot_indices(LABELS, 2, None, 0) and not set(train) & set(selection)
    assert "too small to hold out from" in episode.selection_rule
