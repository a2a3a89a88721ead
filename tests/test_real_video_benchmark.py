"""`benchmarks/real_video.py` splits each video in time: no evaluation frame lies near a training frame."""

from __future__ import annotations

import importlib.util
from itertools import pairwise
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "real_video.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("real_video", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("num_frames", [68, 120, 132, 795])  # the lengths of the benchmark's videos
def test_evaluation_segments_come_after_a_gap_behind_every_training_segment(num_frames):
    bench = load_benchmark()
    train, evaluation = bench.split_segments(num_frames).values()
    last_train_frame = max(train) + bench.SEGMENT_FRAMES - 1
    assert min(evaluation) - last_train_frame > bench.GAP_PART * num_frames - 1
    assert max(evaluation) + bench.SEGMENT_FRAMES <= num_frames, "every segment lies inside the video"
    for starts in (train, evaluation):  # segments never overlap one another
        assert all(later - earlier >= bench.SEGMENT_FRAMES for earlier, later in pairwise(starts))
    assert len(train) == min(bench.MAX_TRAIN, round(bench.TRAIN_PART * num_frames) // bench.SEGMENT_FRAMES)
