"""The contract every pooling of this package follows.

A pooling turns the tokens a frozen backbone hands over, ``[B, N, D]``, into one feature vector per image,
``[B, out_features]``. It is a plain ``torch.nn.Module``: it knows nothing of `transformers`, of the backbone
family, or of whether the tokens came live from a backbone or from a token cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

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
    poolings that reshape to 2-D need (the others ignore it). ``token_mask`` ``[B, N]`` marks real tokens ``True``
    and padding ``False`` (images of different sizes in one batch): every pooling ignores the padding, so a padded
    image gets the output it gets alone.

    Poolings with learned queries may set ``supports_uniform_queries`` and take ``uniform_queries`` (query indices
    whose attention is made uniform, for the per-query analysis) as a keyword of ``forward``.
    """

    out_features: int
    supports_uniform_queries: ClassVar[bool] = False

    def forward(
        self,
        tokens: torch.Tensor,
        num_prefix_tokens: int = 0,
        grid_size: tuple[int, int] | None = None,
        token_mask: torch.Tensor | None = None,
    ) -> PoolingOutput:
        raise NotImplementedError

    @classmethod
    def pool_together(
        cls,
        poolings: Sequence[Pooling],
        tokens: torch.Tensor,
        num_prefix_tokens: int = 0,
        grid_size: tuple[int, int] | None = None,
        token_mask: torch.Tensor | None = None,
    ) -> list[PoolingOutput]:
        """What each of ``poolings`` (instances of this class) returns for the same ``tokens``, in their order.

        A grid of probes reads one batch of tokens many times; a class whose members can share one larger
        computation (EP: their queries side by side) overrides this, so that their math stays in one place and only
        the kernels grow. Each result equals that pooling's own forward, to float rounding."""
        return [pooling(tokens, num_prefix_tokens, grid_size, token_mask) for pooling in poolings]


def check_tokens(tokens: torch.Tensor, hidden_size: int, token_mask: torch.Tensor | None = None) -> None:
    """Fail with a readable message instead of an opaque matmul error when the token width (or mask) is wrong."""
    if tokens.ndim != 3 or tokens.shape[-1] != hidden_size:
        raise ValueError(
            f"Expected tokens of shape [batch, num_tokens, {hidden_size}], got {tuple(tokens.shape)}. The probe was "
            f"built for hidden size {hidden_size}; make sure it reads the backbone it was trained on."
        )
    if token_mask is not None and (token_mask.dtype != torch.bool or token_mask.shape != tokens.shape[:2]):
        raise ValueError(
            f"token_mask must be a bool tensor of shape {tuple(tokens.shape[:2])} (True for real tokens), got "
            f"{token_mask.dtype} of shape {tuple(token_mask.shape)}."
        )


def masked_softmax(logits: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax over the last axis (the ``N`` tokens) of ``[B, ..., N]`` logits, with zero weight on padding."""
    if token_mask is None:
        return logits.softmax(dim=-1)
    mask = token_mask.view(token_mask.shape[0], *([1] * (logits.ndim - 2)), token_mask.shape[1])
    return logits.masked_fill(~mask, float("-inf")).softmax(dim=-1)


def masked_mean(tokens: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
    """``[B, N, D] -> [B, D]``: the mean of the real tokens."""
    if token_mask is None:
        return tokens.mean(dim=1)
    weights = token_mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1)


def masked_batch_norm(norm: nn.Module, tokens: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
    """A ``BatchNorm1d`` over the channels of ``[B, N, D]`` tokens whose statistics come from real tokens only."""
    if token_mask is None:
        return norm(tokens.transpose(1, 2)).transpose(1, 2)
    normed = torch.zeros_like(tokens)
    normed[token_mask] = norm(tokens[token_mask])
    return normed


def refuse_padding(token_mask: torch.Tensor | None, name: str) -> None:
    """For poolings over the 2-D grid, which padding tokens (no grid position) would corrupt."""
    if token_mask is not None and not bool(token_mask.all()):
        raise ValueError(
            f"{name} pools over the 2-D patch grid and cannot read padded tokens (images of different grids in one "
            "batch): give it images of one size, or batches of one image."
        )
