"""Error bars: the bootstrap interval of a hand-built case equals a direct computation, and the spread over runs is
the sample statistics with a Student-t interval."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hf_efficient_probing.evaluation.intervals import bootstrap_interval, spread


def test_bootstrap_interval_is_the_percentiles_of_resampled_accuracies():
    hits = np.array([1] * 80 + [0] * 20)
    interval = bootstrap_interval(hits, resamples=500, seed=3)
    # the same draws, written out: 500 resamples of 100 images with replacement from the seeded generator
    draws = np.random.default_rng(3).integers(0, 100, size=(500, 100))
    accuracies = hits[draws].mean(axis=1)
    assert interval.value == 0.8
    assert (interval.low, interval.high) == tuple(np.quantile(accuracies, [0.025, 0.975]))
    assert 0.7 < interval.low < 0.8 < interval.high < 0.9  # about +-1.96 x the binomial standard error of 0.04
    assert bootstrap_interval(hits, resamples=500, seed=3) == interval, "seeded"
    assert bootstrap_interval(hits, resamples=500, seed=4) != interval
    # 0/1 hits give a few distinct quantiles that other draws can share; continuous values show the draws themselves
    values = np.random.default_rng(0).normal(size=50)
    third, fourth = (bootstrap_interval(values, resamples=200, seed=seed) for seed in (3, 4))
    means = values[np.random.default_rng(3).integers(0, 50, size=(200, 50))].mean(axis=1)
    assert [third.low, third.high] == pytest.approx(np.quantile(means, [0.025, 0.975]))
    assert (third.low, third.high) != (fourth.low, fourth.high), "the seed draws the resamples"


def test_bootstrap_interval_resamples_rows_for_any_statistic():
    rows = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    interval = bootstrap_interval(rows, statistic=lambda r: float(r[:, 1].sum() - r[:, 0].sum()), resamples=50)
    assert interval.value == interval.low == interval.high == 3.0  # each row adds exactly one: rows move together


def test_spread_is_the_sample_mean_std_and_t_interval():
    result = spread([0.70, 0.74, 0.78], over="seeds")
    assert result["mean"] == pytest.approx(0.74) and result["std"] == pytest.approx(0.04)
    half = 4.302652729911275 * 0.04 / math.sqrt(3)  # Student's t, 2 degrees of freedom, 97.5 %
    assert result["interval"] == pytest.approx([0.74 - half, 0.74 + half])
    assert result["values"] == [0.70, 0.74, 0.78] and result["over"] == "seeds"
    assert spread([0.5])["interval"] == [0.5, 0.5]
    with pytest.raises(ValueError, match="at least one"):
        spread([])
