"""The patch grid: sizes given as an int or a pair, and the ``(rows, columns)`` grid a run of patch tokens lies on.

The one place these are decided, for the poolings that reshape tokens to 2-D, the models and the backbone table.
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


def patch_grid(num_patches: int, grid_size: Sequence[int] | None, name: str) -> tuple[int, int]:
    """The grid of ``num_patches`` patch tokens: ``grid_size`` when given (checked against the count), else the
    square one; an error naming ``name`` (who needs the grid) when there is none."""
    if grid_size is None:
        grid_size = square_grid(num_patches)
        if grid_size is None:
            raise ValueError(
                f"{name} lays the tokens out on the 2-D patch grid, but {num_patches} patch tokens do not form a "
                "square grid; pass grid_size=(height, width)."
            )
    height, width = as_pair(grid_size)
    if height * width != num_patches:
        raise ValueError(f"{name}: grid_size {(height, width)} does not match the {num_patches} patch tokens.")
    return height, width


def patch_tokens_and_grid(
    tokens: torch.Tensor, num_prefix_tokens: int, grid_size: Sequence[int] | None, name: str
) -> tuple[torch.Tensor, tuple[int, int]]:
    """The patch tokens ``[B, h * w, D]`` (the ``num_prefix_tokens`` leading ones dropped) and their ``(h, w)`` grid,
    row-major."""
    patches = tokens[:, num_prefix_tokens:]
    try:
        return patches, patch_grid(patches.shape[1], grid_size, name)
    except ValueError as error:
        raise ValueError(f"{error} ({tokens.shape[1]} tokens, {num_prefix_tokens} of them prefix tokens)") from None
