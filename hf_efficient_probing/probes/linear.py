"""Linear probing features: the [CLS] token, the mean of the patch tokens (GAP), or both concatenated.

The pooling has no parameters; the head's BatchNorm and linear classifier make it a linear probe.
"""

from __future__ import annotations

import torch

from .base import Pooling, PoolingOutput, check_tokens, masked_mean

LINEAR_FEATURES = ("cls", "gap", "cls+gap")


def linear_features(
    tokens: torch.Tensor, features: str, num_prefix_tokens: int = 0, token_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``[B, N, D]`` tokens -> the ``[B, D]`` (``"cls+gap"``: ``[B, 2D]``) global feature of each image: the [CLS]
    token (the first one), the mean of the real patch tokens after the ``num_prefix_tokens`` leading ones (GAP), or
    both. The one implementation of these features: the linear probe, k-NN and the token cache's features use it."""
    if features not in LINEAR_FEATURES:
        raise ValueError(f"Unknown linear-probe features {features!r}; choose one of {LINEAR_FEATURES}.")
    if features != "gap" and num_prefix_tokens < 1:
        raise ValueError(
            f"Linear features {features!r} read the [CLS] token, but the tokens have no prefix token. "
            "Read the tokens with token_selection='all' on a backbone that has a [CLS] token, or use 'gap'."
        )
    if features == "cls":
        return tokens[:, 0]
    patch_mask = token_mask[:, num_prefix_tokens:] if token_mask is not None else None
    gap = masked_mean(tokens[:, num_prefix_tokens:], patch_mask)
    return gap if features == "gap" else torch.cat([tokens[:, 0], gap], dim=-1)


class LinearPooling(Pooling):
    """Select the linear-probe feature.

    Args:
        hidden_size: token width D.
        features: ``"cls"`` (the first token, which must be a [CLS]), ``"gap"`` (mean of the patch tokens) or
            ``"cls+gap"`` (both, concatenated: width 2D).
    """

    def __init__(self, hidden_size: int, features: str = "cls"):
        super().__init__()
        if features not in LINEAR_FEATURES:
            raise ValueError(f"Unknown linear-probe features {features!r}; choose one of {LINEAR_FEATURES}.")
        self.hidden_size = hidden_size
        self.features = features
        self.out_features = 2 * hidden_size if features == "cls+gap" else hidden_size

    @property
    def needs_cls_token(self) -> bool:
        return self.features != "gap"

    def forward(self, tokens, num_prefix_tokens=0, grid_size=None, token_mask=None) -> PoolingOutput:
        check_tokens(tokens, self.hidden_size, token_mask)
        return PoolingOutput(pooled=linear_features(tokens, self.features, num_prefix_tokens, token_mask))

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, features={self.features!r}"
