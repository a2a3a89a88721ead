"""The probe head shared by every pooling: pooling -> non-affine BatchNorm -> linear classifier.

This is the module the `transformers` heads of this package train, the module the official-code converter returns,
and the module trained on cached tokens: one module, wherever its tokens come from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import Pooling, PoolingOutput


@dataclass
class ProbeHeadOutput:
    """Logits ``[B, num_labels]``, the pooled feature before the BatchNorm, and the pooling's attention, if any."""

    logits: torch.Tensor
    features: torch.Tensor
    attentions: torch.Tensor | None = None


class ProbeHead(nn.Module):
    """``pooling -> BatchNorm1d(affine=False) -> Linear``.

    The BatchNorm has no trainable parameters: in eval mode it is a fixed standardisation learned from the training
    features, as in the official code (eps 1e-6, momentum 0.1). ``batch_norm=False`` leaves it out (``pooling ->
    Linear``), as V-JEPA 2's probes are trained: their converted heads then give V-JEPA 2's logits exactly.
    """

    def __init__(self, pooling: Pooling, num_labels: int, batch_norm_eps: float = 1e-6, batch_norm: bool = True):
        super().__init__()
        self.pooling = pooling
        features = pooling.out_features
        self.norm = nn.BatchNorm1d(features, affine=False, eps=batch_norm_eps) if batch_norm else nn.Identity()
        self.classifier = nn.Linear(features, num_labels)

    def forward(
        self,
        tokens: torch.Tensor,
        num_prefix_tokens: int = 0,
        grid_size: tuple[int, int] | None = None,
        token_mask: torch.Tensor | None = None,
        **pooling_inputs,
    ) -> ProbeHeadOutput:
        """``pooling_inputs``: extra keywords of the pooling's forward (EP's ``uniform_queries``)."""
        pooled = self.pooling(
            tokens, num_prefix_tokens=num_prefix_tokens, grid_size=grid_size, token_mask=token_mask, **pooling_inputs
        )
        return self.classify(pooled)

    def classify(self, pooled: PoolingOutput) -> ProbeHeadOutput:
        """The BatchNorm and the classifier on this head's pooling output (computed by ``forward``, or by
        ``Pooling.pool_together`` with other heads' poolings: a grid of probes)."""
        logits = self.classifier(self.norm(pooled.pooled))
        return ProbeHeadOutput(logits=logits, features=pooled.pooled, attentions=pooled.attentions)
