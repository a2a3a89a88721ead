"""The contract every pooling of this package follows.

A pooling turns the tokens a frozen backbone hands over, ``[B, N, D]``, into one feature vector per image,
``[B, out_features]``. It is a plain ``torch.nn.Module``: it knows nothing of `transformers`, of the backbone
family, or of whether the tokens came live from a backbone or from a token cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class PoolingOutput:
    """What a pooling returns.

    Attributes:
        pooled: ``[B, out_features]`` the feature handed to the BatchNorm and the classifier.
        attentions: ``[B, Q, N]`` the attention of each query (or head) over the ``N`` input tokens, for the
            poolings that have one; ``None`` otherwise.
    """

    pooled: torch.Tensor
    attentions: torch.Tensor | None = None


class Pooling(nn.Module):
    """Base class of the poolings.

    Subclasses set ``out_features`` in their constructor and implement ``forward``. ``num_prefix_tokens`` says how
    many leading tokens ([CLS]) precede the patch tokens; ``grid_size`` is the ``(height, width)`` patch grid, which
    poolings that reshape to 2-D need (the others ignore it).
    """

    out_features: int

    def forward(
        self,
        tokens: torch.Tensor,
        num_prefix_tokens: int = 0,
        grid_size: tuple[int, int] | None = None,
    ) -> PoolingOutput:
        raise NotImplementedError


def check_tokens(tokens: torch.Tensor, hidden_size: int) -> None:
    """Fail with a readable message instead of an opaque matmul error when the token width is wrong."""
    if tokens.ndim != 3 or tokens.shape[-1] != hidden_size:
        raise ValueError(
            f"Expected tokens of shape [batch, num_tokens, {hidden_size}], got {tuple(tokens.shape)}. The probe was "
            f"built for hidden size {hidden_size}; make sure it reads the backbone it was trained on."
        )
