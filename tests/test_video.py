"""Video decoding and clip sampling, on a small synthetic video (a square moving across the frame) written with
torchcodec's encoder: the right frames in the right order, from every source `datasets` hands over, and clear
errors for a video that cannot be decoded or is too short for one clip."""

from __future__ import annotations

import pytest
import torch
from conftest import write_video
from datasets import Dataset, Video

from hf_efficient_probing.video import VideoDecodeError, clip_indices, decode_clips

HEIGHT, WIDTH, SQUARE = 32, 96, 8


def moving_square(num_frames: int) -> torch.Tensor:
    """``uint8`` ``[T, 3, H, W]``: a white square on black moving right, 4 pixels a frame (frame ``i`` holds the
    square at column ``4 i``, so a decoded frame says which one it is)."""
    frames = torch.zeros(num_frames, 3, HEIGHT, WIDTH, dtype=torch.uint8)
    top = HEIGHT // 2 - SQUARE // 2
    for index in range(num_frames):
        frames[index, :, top : top + SQUARE, 4 * index : 4 * index + SQUARE] = 255
    return frames


def frame_numbers(clip: torch.Tensor) -> list[int]:
    """Which frame of a :func:`moving_square` video each decoded frame is (the square's first column / 4)."""
    columns = clip.float().mean(dim=1).amax(dim=1) > 127  # [T, W]: where the square is
    return [round(int(column.nonzero()[0]) / 4) for column in columns]


@pytest.fixture
def video_file(tmp_path):
    return write_video(tmp_path / "right.mp4", moving_square(20))


def test_evaluation_clips_are_spread_evenly_and_a_training_clip_is_drawn():
    assert clip_indices(20, 4, 2) == [[6, 8, 10, 12]]  # one clip: the centred one
    assert clip_indices(20, 4, 2, num_clips=3) == [[0, 2, 4, 6], [6, 8, 10, 12], [13, 15, 17, 19]]
    drawn = {tuple(clip_indices(20, 4, 3, generator=torch.Generator().manual_seed(seed))[0]) for seed in range(30)}
    assert len(drawn) > 1 and all(clip[0] >= 0 and clip[-1] <= 19 and clip[1] - clip[0] == 3 for clip in drawn)
    again = clip_indices(20, 4, 3, generator=torch.Generator().manual_seed(7))
    assert again == clip_indices(20, 4, 3, generator=torch.Generator().manual_seed(7))


def test_decoded_clips_hold_the_sampled_frames_in_order(video_file):
    clips = decode_clips(video_file, frames_per_clip=4, frame_stride=2, num_clips=3)
    assert clips.shape == (3, 4, 3, HEIGHT, WIDTH) and clips.dtype == torch.uint8
    assert [frame_numbers(clip) for clip in clips] == clip_indices(20, 4, 2, num_clips=3)


def test_every_source_datasets_hands_over_gives_the_same_clips(video_file):
    expected = decode_clips(video_file, 4, 3)
    decoded = Dataset.from_dict({"video": [str(video_file)]}).cast_column("video", Video())[0]["video"]
    undecoded = Dataset.from_dict({"video": [str(video_file)]}).cast_column("video", Video(decode=False))[0]["video"]
    for source in (decoded, undecoded, {"bytes": video_file.read_bytes(), "path": None}, video_file.read_bytes()):
        assert torch.equal(decode_clips(source, 4, 3), expected)


def test_a_video_that_cannot_be_decoded_is_named(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 100)
    with pytest.raises(VideoDecodeError, match=r"Cannot read .*broken.mp4.*Fix or remove that video"):
        decode_clips(broken, 4, where=f"the video {broken}")
    with pytest.raises(VideoDecodeError, match="Cannot read the video at index 3: .*No such file"):
        decode_clips(tmp_path / "missing.mp4", 4, where="the video at index 3")
    with pytest.raises(VideoDecodeError, match="expected a video file, its bytes or a decoder, got int"):
        decode_clips(7, 4)


def test_a_video_too_short_for_one_clip_is_named(video_file):
    with pytest.raises(
        VideoDecodeError, match=r"right.mp4: it has 20 frames, too short for one clip of 8 frames every 3"
    ):
        decode_clips(video_file, 8, 3, where=f"the video {video_file}")
    assert decode_clips(video_file, 7, 3).shape[1] == 7  # 19 frames: fits
