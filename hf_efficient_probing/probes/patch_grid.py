"""The patch grid: sizes given as an int or a pair, and the grid a run of patch tokens lies on.

An image's tokens lie on a ``(rows, columns)`` grid; a video clip's space-time tokens on a ``(frames, rows,
columns)`` grid, frame after frame (``frames`` counts token frames: a clip's frames divided by the tubelet size).
The one place these are decided, for the poolings that lay tokens out in 2-D, the models and the backbone table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def as_pair(size: int | Sequence[int]) -> tuple[int, int]:
    """``(height, width)`` of a size given as one int (square) or as a pair, as configs write image and patch sizes."""
    if isinstance(size, int):
        return (size, size)
    if len(size) != 2:
        raise ValueError(f"Expected a size as an int or a (height, width) pair, got {size!r}.")
    return (int(size[0]), int(size[1]))


def square_grid(num_patches: int) -> tuple[int, int] | None:
    """The square grid of ``num_patches`` patches, or ``None`` when the count is not a square."""
    side = math.isqrt(num_patches)
    return (side, side) if side * side == num_patches else None


def frame_grid(num_patches: int, grid_size: Sequence[int] | None, name: str) -> tuple[int, int, int]:
    """``(frames, rows, columns)`` of ``num_patches`` patch tokens: an image is one frame; ``grid_size`` is an image
    grid ``(h, w)`` or a clip grid ``(t, h, w)`` (checked against the count), else the square image grid; an error
    naming ``name`` (who needs the grid) when there is none."""
    if grid_size is None:
        grid_size = square_grid(num_patches)
        if grid_size is None:
            raise ValueError(
                f"{name} lays the tokens out on the 2-D patch grid, but {num_patches} patch tokens do not form a "
                "square grid; pass grid_size=(height, width)."
            )
    grid = as_pair(grid_size) if isinstance(grid_size, int) else tuple(int(size) for size in grid_size)
    if len(grid) not in (2, 3):
        raise ValueError(f"{name}: grid_size must be (rows, columns) or (frames, rows, columns), got {grid_size!r}.")
    frames, height, width = grid if len(grid) == 3 else (1, *grid)
    if frames * height * width != num_patches:
        raise ValueError(f"{name}: grid_size {grid} does not match the {num_patches} patch tokens.")
    return frames, height, width


def patch_grid(num_patches: int, grid_size: Sequence[int] | None, name: str) -> tuple[int, int]:
    """The 2-D grid of ``num_patches`` patch tokens (see :func:`frame_grid`), for a pooling that needs one image
    grid: the space-time tokens of a clip of several token frames are refused."""
    frames, height, width = frame_grid(num_patches, grid_size, name)
    if frames > 1:
        raise ValueError(
            f"{name} lays the tokens out on one 2-D patch grid and cannot read the space-time tokens of a video clip "
            f"({frames}x{height}x{width}: frames x rows x columns). Probe video backbones with a pooling that reads "
            "tokens as a set (ep, linear, aim, jepa, vjepa2, siglip, ...)."
        )
    return height, width


def patch_tokens_and_grid(
    tokens: torch.Tensor, num_prefix_tokens: int, grid_size: Sequence[int] | None, name: str, frames: bool = False
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The patch tokens ``[B, N, D]`` (the ``num_prefix_tokens`` leading ones dropped) and their grid, row-major:
    ``(h, w)``, or with ``frames=True`` ``(t, h, w)`` for a pooling that works frame by frame (images: ``t = 1``)."""
    patches = tokens[:, num_prefix_tokens:]
    grid_of = frame_grid if frames else patch_grid
    try:
        return patches, grid_of(patches.shape[1], grid_size, name)
    except ValueError as error:
        raise ValueError(f"{error} ({tokens.shape[1]} tokens, {num_prefix_tokens} of them prefix tokens)") from None
