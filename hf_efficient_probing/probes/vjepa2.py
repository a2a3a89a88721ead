"""V-JEPA 2's attentive probe: `transformers`' ``VJEPA2AttentivePooler``, the head of ``VJEPA2ForVideoClassification``.

V-JEPA 2 evaluates its frozen encoder with this probe. Unlike V-JEPA's (``jepa``: one cross-attention block), it
first runs pre-norm self-attention blocks over all the tokens, then one learned query attends over them in a
cross-attention block that has no output projection::

    X <- X + W_o MHSA(LN_1(X)) + b_o;  X <- X + MLP(LN_2(X))                     (num_self_attention_layers times)
    z = q_0 + concat_h softmax(W_q,h q_0 . W_k,h LN(X)^T / sqrt(d)) (LN(X) W_v,h^T + b_v)        (+ query and key bias)
    y = z + MLP(LN'(z))

The self-attention costs ``N^2`` per clip (thousands of space-time tokens); only the cross-attention, whose query
does not depend on the clip, is folded (:func:`.cross_attention.folded_cross_attention`). The submodules carry the
names of `transformers`' own, so that a ``VJEPA2ForVideoClassification``'s ``pooler.*`` weights load unchanged (the
converter in ``hf_efficient_probing.transformers_heads``). Initialisation as `transformers`: truncated normal
(std ``init_std``) for the query and every linear weight, zero biases, and the residual branches' last layers
scaled down with depth.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Pooling, PoolingOutput, check_tokens
from .cross_attention import FeedForward, _check_heads, folded_cross_attention


class SelfAttention(nn.Module):
    """Multi-head self-attention with biased ``q_proj``, ``k_proj``, ``v_proj`` and ``out_proj``; padding tokens are
    never attended to."""

    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, num_tokens, width = x.shape

        def heads(projected: torch.Tensor) -> torch.Tensor:
            return projected.view(batch, num_tokens, self.num_heads, -1).transpose(1, 2)

        mask = token_mask[:, None, None, :] if token_mask is not None else None
        attended = F.scaled_dot_product_attention(
            heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)), attn_mask=mask
        )
        return self.out_proj(attended.transpose(1, 2).reshape(batch, num_tokens, width))


class SelfAttentionLayer(nn.Module):
    """A pre-norm transformer block: ``x + MHSA(LN_1(x))``, then ``x + MLP(LN_2(x))``."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, layer_norm_eps: float):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.self_attn = SelfAttention(hidden_size, num_heads)
        self.layer_norm2 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.mlp = FeedForward(hidden_size, mlp_ratio)

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), token_mask)
        return x + self.mlp(self.layer_norm2(x))


class CrossAttention(nn.Module):
    """The query, key and value projections of the cross-attention (biased; no output projection)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)


class CrossAttentionLayer(nn.Module):
    """``z = q + CA(q, LN_1(X))``, then ``z + MLP(LN_2(z))``: the query is not normalised, the tokens are."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, layer_norm_eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.layer_norm1 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.cross_attn = CrossAttention(hidden_size)
        self.layer_norm2 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.mlp = FeedForward(hidden_size, mlp_ratio)

    def forward(
        self, query: torch.Tensor, x: torch.Tensor, token_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``query`` ``[D]``, tokens ``[B, N, D]`` -> ``([B, D] output, [B, heads, N] attention)``."""
        normed = self.layer_norm1(x)
        head_dim = query.shape[-1] // self.num_heads
        projections = self.cross_attn
        out, attn = folded_cross_attention(
            projections.q_proj(query).view(self.num_heads, head_dim),
            projections.k_proj.weight,
            normed,
            projections.v_proj.weight,
            projections.v_proj.bias,
            normed,
            head_dim**-0.5,
            token_mask,
        )
        z = query + out
        return z + self.mlp(self.layer_norm2(z)), attn


class VJEPA2Pooling(Pooling):
    """V-JEPA 2's attentive pooler (see the module docstring). ``attentions`` ``[B, heads, N]`` are the query's
    cross-attention over the tokens as the self-attention blocks left them.

    Args:
        num_heads: heads of every attention (V-JEPA 2 uses the encoder's: 16 for ViT-L).
        num_self_attention_layers: self-attention blocks before the cross-attention (3 in V-JEPA 2's probes).
        mlp_ratio: hidden width of the MLPs relative to ``hidden_size``.
        layer_norm_eps: epsilon of every LayerNorm (the encoder's, 1e-6).
        init_std: standard deviation of the truncated-normal initialisation.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int = 16,
        num_self_attention_layers: int = 3,
        mlp_ratio: float = 4.0,
        layer_norm_eps: float = 1e-6,
        init_std: float = 0.02,
    ):
        super().__init__()
        _check_heads(hidden_size, num_heads, "vjepa2")
        if num_self_attention_layers < 0:
            raise ValueError(f"vjepa2 num_self_attention_layers must be 0 or more, got {num_self_attention_layers}.")
        self.hidden_size, self.num_heads, self.out_features = hidden_size, num_heads, hidden_size
        self.query_tokens = nn.Parameter(torch.empty(1, 1, hidden_size))
        self.self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_size, num_heads, mlp_ratio, layer_norm_eps)
            for _ in range(num_self_attention_layers)
        )
        self.cross_attention_layer = CrossAttentionLayer(hidden_size, num_heads, mlp_ratio, layer_norm_eps)
        nn.init.trunc_normal_(self.query_tokens, std=init_std)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=init_std)
                nn.init.zeros_(module.bias)
        for depth, layer in enumerate(self.self_attention_layers, start=1):
            nn.init.trunc_normal_(layer.self_attn.out_proj.weight, std=init_std / depth**0.5)
            nn.init.trunc_normal_(layer.mlp.fc2.weight, std=init_std / depth**0.5)
        last = self.cross_attention_layer.mlp.fc2.weight
        nn.init.trunc_normal_(last, std=init_std / (num_self_attention_layers + 1) ** 0.5)

    def forward(self, tokens, num_prefix_tokens=0, grid_size=None, token_mask=None) -> PoolingOutput:
        check_tokens(tokens, self.hidden_size, token_mask)
        x = tokens
        for layer in self.self_attention_layers:
            x = layer(x, token_mask)
        pooled, attn = self.cross_attention_layer(self.query_tokens.view(-1), x, token_mask)
        return PoolingOutput(pooled=pooled, attentions=attn)
