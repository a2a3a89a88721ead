"""Videos in, clips of frames out: the one checked video decoder and the clip sampling of the video families.

A video backbone reads clips of ``frames_per_clip`` frames taken every ``frame_stride`` frames of the video (VideoMAE,
ViViT and TimeSformer a fixed number, V-JEPA 2 any multiple of its tubelet). Training draws one clip at a random
start; evaluation takes ``num_clips`` clips spread evenly over the video, whose logits are averaged (V-JEPA 2's
eval). :func:`decode_clips` decodes only the frames those clips need, with `torchcodec` as `datasets`' ``Video``
feature does, from a file, bytes, a ``{"bytes", "path"}`` dict or a decoder `datasets` hands over, and returns them
as ``uint8`` ``[num_clips, T, 3, H, W]`` for the backbone's video processor. A video that cannot be decoded, or is
too short for one clip, raises :class:`VideoDecodeError` naming it, as images raise ``images.ImageDecodeError``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

VIDEO_SUFFIXES = (".mkv", ".mp4", ".avi", ".mpeg", ".mov", ".webm")  # `datasets`' videofolder's, and WebM


class VideoDecodeError(ValueError):
    """A video that cannot be decoded into the clips asked for; the message names it and says how to go on."""


@dataclass(frozen=True)
class ClipSampling:
    """How a run takes clips from its videos: ``frames_per_clip`` frames every ``frame_stride`` frames, and
    ``clips_per_video`` clips spread evenly over each video where it evaluates (their logits averaged). Training draws
    one clip at a random start when it runs the backbone live; the token cache holds every evaluation clip."""

    frames_per_clip: int
    frame_stride: int = 1
    clips_per_video: int = 1

    def __post_init__(self):
        if self.frames_per_clip < 1 or self.frame_stride < 1 or self.clips_per_video < 1:
            raise ValueError(
                f"frames_per_clip, frame_stride and clips_per_video must be positive, got {self.frames_per_clip}, "
                f"{self.frame_stride} and {self.clips_per_video}."
            )

    @property
    def span(self) -> int:
        return clip_span(self.frames_per_clip, self.frame_stride)

    def describe(self) -> str:
        clips = "the centred clip" if self.clips_per_video == 1 else f"{self.clips_per_video} evenly spread clips"
        return (
            f"clips of {self.frames_per_clip} frames every {self.frame_stride} ({self.span} frames of the video); "
            f"evaluation reads {clips} of every video" + (", their logits averaged" if self.clips_per_video > 1 else "")
        )


def clip_span(frames_per_clip: int, frame_stride: int = 1) -> int:
    """Frames of the video one clip covers, first to last."""
    return (frames_per_clip - 1) * frame_stride + 1


def clip_starts(num_frames: int, span: int, num_clips: int = 1, generator: torch.Generator | None = None) -> list[int]:
    """First frame of each clip covering ``span`` of a video's ``num_frames``: one random start with a
    ``generator`` (training), else ``num_clips`` starts spread evenly from the first to the last possible one (one
    clip: the centred one)."""
    last = num_frames - span
    if generator is not None:
        return [int(torch.randint(last + 1, (1,), generator=generator))]
    if num_clips == 1:
        return [last // 2]
    return [round(index * last / (num_clips - 1)) for index in range(num_clips)]


def clip_indices(
    num_frames: int,
    frames_per_clip: int,
    frame_stride: int = 1,
    num_clips: int = 1,
    generator: torch.Generator | None = None,
    where: str = "the video",
) -> list[list[int]]:
    """Frame indices of the clips of a video of ``num_frames`` frames (see :func:`clip_starts`)."""
    if frames_per_clip < 1 or frame_stride < 1 or num_clips < 1:
        raise ValueError(
            f"frames_per_clip, frame_stride and num_clips must be positive, got {frames_per_clip}, {frame_stride} "
            f"and {num_clips}."
        )
    span = clip_span(frames_per_clip, frame_stride)
    if num_frames < span:
        raise VideoDecodeError(
            f"Cannot sample clips from {where}: it has {num_frames} frames, too short for one clip of {frames_per_clip} frames every "
            f"{frame_stride} ({span} frames). Use a smaller frame stride (or fewer frames per clip, where the "
            "backbone allows it), or remove that video."
        )
    return [
        list(range(start, start + span, frame_stride)) for start in clip_starts(num_frames, span, num_clips, generator)
    ]


def open_video(source, where: str = "the video"):
    """A `torchcodec` ``VideoDecoder`` for ``source`` (a path, bytes, a `datasets` ``{"bytes", "path"}`` dict, or a
    decoder already); :class:`VideoDecodeError` naming ``where`` when it cannot be opened."""
    try:
        from torchcodec.decoders import VideoDecoder
    except ImportError as error:
        raise ImportError(
            "Decoding videos needs torchcodec and FFmpeg: pip install 'hf-efficient-probing[video]', and FFmpeg "
            "from your system's packages (e.g. apt-get install ffmpeg)."
        ) from error
    if isinstance(source, VideoDecoder):
        return source
    try:
        if isinstance(source, dict):  # a `datasets` Video feature read with decode=False
            source = source.get("bytes") or source.get("path")
        if isinstance(source, bytearray):
            source = bytes(source)
        elif isinstance(source, os.PathLike):
            source = os.fspath(source)
        if not isinstance(source, (str, bytes)):
            raise TypeError(f"expected a video file, its bytes or a decoder, got {type(source).__name__}")
        return VideoDecoder(source, dimension_order="NCHW")
    except Exception as error:
        raise VideoDecodeError(
            f"Cannot read {where}: {type(error).__name__}: {error}. Fix or remove that video."
        ) from error


def decode_clips(
    source,
    frames_per_clip: int,
    frame_stride: int = 1,
    num_clips: int = 1,
    generator: torch.Generator | None = None,
    where: str = "the video",
) -> torch.Tensor:
    """The clips of a video (see :func:`clip_indices`) as ``uint8`` ``[num_clips, frames_per_clip, 3, H, W]``,
    decoding only the frames they hold. ``where`` names the video in errors (e.g. ``"the video at index 7 of the
    train split (clips/a.mp4)"``)."""
    decoder = open_video(source, where)
    try:
        num_frames = decoder.metadata.num_frames
        if num_frames is None:
            num_frames = len(decoder)
    except Exception as error:
        raise VideoDecodeError(
            f"Cannot read {where}: {type(error).__name__}: {error}. Fix or remove that video."
        ) from error
    clips = clip_indices(num_frames, frames_per_clip, frame_stride, num_clips, generator, where)
    wanted = sorted({index for clip in clips for index in clip})
    try:
        frames = decoder.get_frames_at(wanted).data
    except Exception as error:
        raise VideoDecodeError(
            f"Cannot decode frames {wanted[0]}-{wanted[-1]} of {where} ({num_frames} frames by its header): "
            f"{type(error).__name__}: {error}. Fix or remove that video."
        ) from error
    position = {index: row for row, index in enumerate(wanted)}
    return torch.stack([frames[[position[index] for index in clip]] for clip in clips])


def check_video(source, sampling: ClipSampling, where: str = "the video") -> None:
    """Raise :class:`VideoDecodeError` naming ``where`` unless the video opens, is long enough for one clip of
    ``sampling`` and its centred clip decodes (what a scan for unreadable videos asks)."""
    decode_clips(source, sampling.frames_per_clip, sampling.frame_stride, 1, where=where)
