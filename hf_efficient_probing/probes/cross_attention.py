"""Cross-attention poolings with learned queries: AIM, CoCa, SigLIP MAP, V-JEPA, CAE, CaiT and plain MHCA.

All of them attend from a few learned queries (one per head group) over the ``N`` tokens. The query of such a
pooling does not depend on the image (or, for CaiT, only through one token), so the projections on the token side
can be folded, as EP does (every attention row sums to one)::

    softmax_n(q_h . (W_k,h x_n + b_k,h)) = softmax_n((W_k,h^T q_h) . x_n)        # the key bias is a constant shift
    sum_n a_hn (W_v,h x_n + b_v,h)       = W_v,h (sum_n a_hn x_n) + b_v,h          # aggregate first, project after

so per image the keys cost ``H x N x D`` and the values ``H x N x D`` multiply-adds instead of ``2 N D^2`` for
projecting every token. :func:`folded_cross_attention` is that computation; the results equal the published
(unfolded) formulas to float rounding, which ``tests/test_baselines.py`` checks against plain implementations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Pooling, PoolingOutput, check_tokens, masked_batch_norm, masked_softmax


def folded_cross_attention(
    queries: torch.Tensor,
    key_weight: torch.Tensor,
    key_tokens: torch.Tensor,
    value_weight: torch.Tensor,
    value_bias: torch.Tensor | None,
    value_tokens: torch.Tensor,
    scale: float,
    token_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One query per head attending over the tokens, with the key and value projections folded.

    Args:
        queries: ``[H, d]`` or ``[B, H, d]`` projected queries, one ``d``-wide query per head.
        key_weight: ``[H * d, D]`` key projection, or ``[d, D]`` shared by all heads (multi-query attention).
        key_tokens: ``[B, N, D]`` tokens the keys are computed from (before the key projection).
        value_weight, value_bias: ``[H * d, D]`` (or ``[d, D]``, shared) value projection and its bias.
        value_tokens: ``[B, N, D]`` tokens the values are computed from.
        scale: multiplier of the query-key logits.
        token_mask: ``[B, N]``, ``False`` for padding tokens, which get zero attention.

    Returns:
        ``([B, H * d] attention output, [B, H, N] attention)``.
    """
    num_heads, head_dim = queries.shape[-2:]
    width = key_tokens.shape[-1]
    key_weight = key_weight.view(-1, head_dim, width).expand(num_heads, head_dim, width)
    value_weight = value_weight.view(-1, head_dim, width).expand(num_heads, head_dim, width)
    if queries.ndim == 2:
        token_space_queries = torch.einsum("hd,hdc->hc", queries * scale, key_weight).unsqueeze(0)
    else:
        token_space_queries = torch.einsum("bhd,hdc->bhc", queries * scale, key_weight)
    attn = masked_softmax(torch.matmul(token_space_queries, key_tokens.transpose(1, 2)), token_mask)  # B, H, N
    aggregated = torch.matmul(attn, value_tokens)  # B, H, D
    out = torch.einsum("bhc,hdc->bhd", aggregated, value_weight)
    if value_bias is not None:
        out = out + value_bias.view(-1, head_dim).expand(num_heads, head_dim)
    return out.reshape(out.shape[0], num_heads * head_dim), attn


def fused_kv_cross_attention(
    queries: torch.Tensor, kv_proj: nn.Linear, tokens: torch.Tensor, scale: float, token_mask=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`folded_cross_attention` with one ``Linear`` producing keys then values (``kv_proj``, bias optional); the
    key bias is dropped since it shifts every logit of a query by the same amount."""
    key_weight, value_weight = kv_proj.weight.chunk(2, dim=0)
    value_bias = kv_proj.bias.chunk(2)[1] if kv_proj.bias is not None else None
    return folded_cross_attention(queries, key_weight, tokens, value_weight, value_bias, tokens, scale, token_mask)


def _check_heads(hidden_size: int, num_heads: int, name: str) -> None:
    if num_heads < 1 or hidden_size % num_heads:
        raise ValueError(f"{name} needs hidden_size divisible by num_heads; got {hidden_size} and {num_heads}.")


class FeedForward(nn.Module):
    """``Linear -> GELU -> Linear``, the transformer MLP (``fc1``/``fc2`` as in timm and the official code)."""

    def __init__(self, hidden_size: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, int(hidden_size * mlp_ratio))
        self.fc2 = nn.Linear(int(hidden_size * mlp_ratio), hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class MultiHeadCrossAttentionPooling(Pooling):
    """Plain multi-head cross-attention (MHCA, the paper's Figure 1): one learned query, projected queries, keys,
    values and output, all with biases. Not in the official code (the paper describes it); ``16`` heads as the
    paper's multi-head baselines.

    ``y = W_o concat_h softmax(W_q,h q . W_k,h X^T / sqrt(d)) (X W_v,h^T) + b_o``
    """

    def __init__(self, hidden_size: int, num_heads: int = 16):
        super().__init__()
        _check_heads(hidden_size, num_heads, "mhca")
        self.hidden_size, self.num_heads, self.out_features = hidden_size, num_heads, hidden_size
        self.query = nn.Parameter(torch.randn(1, hidden_size) * 0.02)
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, tokens, num_prefix_tokens=0, grid_size=None, token_mask=None) -> PoolingOutput:
        check_tokens(tokens, self.hidden_size, token_mask)
        head_dim = self.hidden_size // self.num_heads
        queries = self.q_proj(self.query).view(self.num_heads, head_dim)
        out, attn = folded_cross_attention(
            queries,
            self.k_proj.weight,
            tokens,
            self.v_proj.weight,
            self.v_proj.bias,
            tokens,
            head_dim**-0.5,
            token_mask,
        )
        return PoolingOutput(pooled=self.out_proj(out), attentions=attn)


class AIMPooling(Pooling):
    """AIM's attentive probe (El-Nouby et al., 2024; official ``aim``).

    The tokens are standardised per channel by a non-affine BatchNorm (batch statistics over all B x N tokens in
    training, running statistics in eval); one learned query, *not* projected, attends over them with projected keys
    and values (no biases, no output projection)::

        X' = BN(X);  y = concat_h softmax(q_h . W_k,h X'^T / sqrt(d)) X' W_v,h^T

    Args:
        num_heads: the official command-line default is 16.
    """

    def __init__(self, hidden_size: int, num_heads: int = 16):
        super().__init__()
        _check_heads(hidden_size, num_heads, "aim")
        self.hidden_size, self.num_heads, self.out_features = hidden_size, num_heads, hidden_size
        self.query = nn.Parameter(torch.randn(1, 1, hidden_size) * 0.02)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.token_norm = nn.BatchNorm1d(hidden_size, affine=False, eps=1e-6)

    def forward(self, tokens, num_prefix_tokens=0, grid_size=None, token_mask=None) -> PoolingOutput:
        check_tokens(tokens, self.hidden_size, token_mask)
        normed = masked_batch_norm(self.token_norm, tokens, token_mask)  # statistics of the real tokens only
        head_dim = self.hidden_size // self.num_heads
        queries = self.query.view(self.num_heads, head_dim)
        out, attn = folded_cross_attention(
            queries, self.k_proj.weight, normed, self.v_proj.weight, None, normed, head_dim**-0.5, token_mask
        )
        return PoolingOutput(pooled=out, attentions=attn)


class CoCaPooling(Pooling):
    """CoCa's attentional pooler as in the official ``coca`` (lucidrains' ``CrossAttention``).

    Multi-query attention: 8 query heads of 64 from layer-normalised learned queries, one 64-wide key/value head
    shared by all of them, computed from the raw tokens; output projection 512 -> D, no biases anywhere::

        q = W_q LN(Q_0) / 8;  [k; v] = W_kv X;  y = W_o concat_h softmax(q_h k^T) v

    The official module allocates ``num_queries=196`` queries and returns the output of the first only: the other
    195 x D are dead parameters (never used, never trained). They are kept so that the parameter count and the
    state dict match the official ones; only the first query is computed. The LayerNorm's bias is a fixed zero
    buffer (``query_norm_bias``), as in the official code.
    """

    def __init__(self, hidden_size: int, num_heads: int = 8, head_dim: int = 64, num_queries: int = 196):
        super().__init__()
        self.hidden_size, self.num_heads, self.head_dim, self.out_features = (
            hidden_size,
            num_heads,
            head_dim,
            hidden_size,
        )
        self.queries = nn.Parameter(torch.randn(num_queries, hidden_size))
        self.query_norm_weight = nn.Parameter(torch.ones(hidden_size))
        self.register_buffer("query_norm_bias", torch.zeros(hidden_size))
        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=False)
        self.kv_proj = nn.Linear(hidden_size, 2 * head_dim, bias=False)
        self.out_proj = nn.Linear(num_heads * head_dim, hidden_size, bias=False)

    def forward(self, tokens, num_prefix_tokens=0, grid_size=None, token_mask=None) -> PoolingOutput:
        check_tokens(tokens, self.hidden_size, token_mask)
        query = F.layer_norm(self.queries[:1], (self.hidden_size,), self.query_norm_weight, self.query_norm_bias)
        queries = self.q_proj(query).view(self.num_heads, self.head_dim)
        out, attn = fused_kv_cross_attention(queries, self.kv_proj, tokens, self.head_dim**-0.5, token_mask)
        return PoolingOutput(pooled=self.out_proj(out), attentions=attn)


class MAPPooling(Pooling):
    """SigLIP's multi-head attention pooling (MAP), as timm 0.9.16's ``AttentionPoolLatent`` with its defaults, which
    is what the official ``siglip`` runs: no LayerNorm anywhere (unlike timm's ViT ``global_pool='map'`` and HF's
    ``SiglipMultiheadAttentionPoolingHead``, which normalise before the MLP)::

        q = W_q l + b_q;  a_h = softmax(q_h . (W_k,h X^T + b_k,h) / sqrt(d));  z = W_o concat_h a_h (X W_v,h^T + b_v,h) + b_o
        y = z + MLP(z)
    """

    def __init__(self, hidden_size: int, num_heads: int = 8, mlp_ratio: float = 4.0):
        super().__init__()
        _check_heads(hidden_size, num_heads, "siglip")
        self.hidden_size, self.num_heads, self.out_features = hidden_size, num_heads, hidden_size
        self.latent = nn.Parameter(torch.empty(1, 1, hidden_size))
        with torch.no_grad():  # timm's trunc_normal_tf_: truncated at two standard deviations, then scaled
            nn.init.trunc_normal_(self.latent, a=-2.0, b=2.0).mul_(hidden_size**-0.5)
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.kv_proj = nn.Linear(hidden_size, 2 * hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)
        self.mlp = FeedForward(hidden_size, mlp_ratio)

    def forward(self, tokens, num_prefix_tokens=0, grid_size=None, token_mask=None) -> PoolingOutput:
        check_tokens(tokens, self.hidden_size, token_mask)
        head_dim = self.hidden_size // self.num_heads
        queries = self.q_proj(self.latent).view(self.num_heads, head_dim)
        out, attn = fused_kv_cross_attention(queries, self.kv_proj, tokens, head_dim**-0.5, token_mask)
        pooled = self.out_proj(out)
        return PoolingOutput(pooled=pooled + self.mlp(pooled), attentions=attn)


class JEPAPooling(Pooling):
    """V-JEPA's attentive pooler (official ``jepa``: one query, one cross-attention block, no self-attention)::

        X' = LN_1(X);  z = q_0 + W_o concat_h softmax(W_q,h q_0 . W_k,h X'^T / sqrt(d)) X' W_v,h^T  (+ biases)
        y = z + MLP(LN_2(z))

    The query is not normalised. Initialisation as V-JEPA: truncated normal (std 0.02) for the query and every
    linear weight, zero biases, and the output projection and second MLP layer divided by sqrt(2).

    Args:
        num_heads: the official command-line default is 16.
    """

    def __init__(self, hidden_size: int, num_heads: int = 16, mlp_ratio: float = 4.0, init_std: float = 0.02):
        super().__init__()
        _check_heads(hidden_size, num_heads, "jepa")
        self.hidden_size, self.num_heads, self.out_features = hidden_size, num_heads, hidden_size
        self.query = nn.Parameter(torch.empty(1, 1, hidden_size))
        self.token_norm = nn.LayerNorm(hidden_size)
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.kv_proj = nn.Linear(hidden_size, 2 * hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)
        self.mlp_norm = nn.LayerNorm(hidden_size)
        self.mlp = FeedForward(hidden_size, mlp_ratio)
        nn.init.trunc_normal_(self.query, std=init_std)
        for linear in (self.q_proj, self.kv_proj, self.out_proj, self.mlp.fc1, self.mlp.fc2):
            nn.init.trunc_normal_(linear.weight, std=init_std)
            nn.init.zeros_(linear.bias)
        with torch.no_grad():
            self.out_proj.weight.div_(2**0.5)
            self.mlp.fc2.weight.div_(2**0.5)

    def forward(self, tokens, num_prefix_tokens=0, grid_size=None, token_mask=None) -> PoolingOutput:
        check_tokens(tokens, self.hidden_size, token_mask)
        normed = self.token_norm(tokens)
        head_dim = self.hidden_size // self.num_heads
        queries = self.q_proj(self.query).view(self.num_heads, head_dim)
        out, attn = fused_kv_cross_attention(queries, self.kv_proj, normed, head_dim**-0.5, token_mask)
        pooled = self.query.view(1, -1) + self.out_proj(out)
        return PoolingOutput(pooled=pooled + self.mlp(self.mlp_norm(pooled)), attentions=attn)


class CAEPooling(Pooling):
    """CAE's attentive block (official ``cae``): one zero-initialised query; queries, keys and values each read
    through their own LayerNorm; no biases but the output projection's; no residual, no MLP::

        y = W_o concat_h softmax(W_q,h LN_q(q_0) . W_k,h LN_k(X)^T / sqrt(d)) LN_v(X) W_v,h^T + b_o

    Both token LayerNorms share one standardisation; their affine parts are folded into the keys and aggregated
    values. ``unused_norm`` is the official ``norm2_cross``, a LayerNorm that is never applied: a dead parameter kept
    so that the parameter count and the state dict match the official ones.
    """

    def __init__(self, hidden_size: int, num_heads: int = 8):
        super().__init__()
        _check_heads(hidden_size, num_heads, "cae")
        self.hidden_size, self.num_heads, self.out_features = hidden_size, num_heads, hidden_size
        self.query = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.query_norm = nn.LayerNorm(hidden_size)
        self.key_norm = nn.LayerNorm(hidden_size)
        self.value_norm = nn.LayerNorm(hidden_size)
        self.unused_norm = nn.LayerNorm(hidden_size)
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, tokens, num_prefix_tokens=0, grid_size=None, token_mask=None) -> PoolingOutput:
        check_tokens(tokens, self.hidden_size, token_mask)
        standardised = F.layer_norm(tokens, (self.hidden_size,), eps=self.key_norm.eps)
        head_dim = self.hidden_size // self.num_heads
        queries = self.q_proj(self.query_norm(self.query)).view(self.num_heads, head_dim)
        # LN_k(X) = X_s * g_k + b_k: the gain folds into the key weight, the shift is constant over tokens.
        key_weight = self.k_proj.weight * self.key_norm.weight
        out, attn = folded_cross_attention(
            queries,
            key_weight,
            standardised,
            self.v_proj.weight * self.value_norm.weight,
            self.v_proj.weight @ self.value_norm.bias,
            standardised,
            head_dim**-0.5,
            token_mask,
        )
        return PoolingOutput(pooled=self.out_proj(out), attentions=attn)


class ClassAttentionPooling(Pooling):
    """CaiT's class-attention block (official ``cait``: one iteration, 4 heads, LayerScale 1e-5).

    A learned class token ``c`` attends over ``u = [c; X]`` (itself included), then goes through an MLP, both with
    LayerScale residuals, and a final LayerNorm::

        u' = LN_1([c; X]);  c <- c + g_1 * (W_o concat_h softmax(W_q,h u'_0 . W_k,h u'^T / sqrt(d)) u' W_v,h^T + b)
        c <- c + g_2 * MLP(LN_2(c));  y = LN(c)

    ``attentions`` are the class token's attention over the ``N`` tokens (its weight on itself left out).
    """

    def __init__(self, hidden_size: int, num_heads: int = 4, mlp_ratio: float = 4.0, init_scale: float = 1e-5):
        super().__init__()
        _check_heads(hidden_size, num_heads, "cait")
        self.hidden_size, self.num_heads, self.out_features = hidden_size, num_heads, hidden_size
        self.cls_token = nn.Parameter(torch.empty(1, 1, hidden_size))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.attn_norm = nn.LayerNorm(hidden_size, eps=1e-6)
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)
        self.attn_scale = nn.Parameter(torch.full((hidden_size,), init_scale))
        self.mlp_norm = nn.LayerNorm(hidden_size, eps=1e-6)
        self.mlp = FeedForward(hidden_size, mlp_ratio)
        self.mlp_scale = nn.Parameter(torch.full((hidden_size,), init_scale))
        self.final_norm = nn.LayerNorm(hidden_size)

    def forward(self, tokens, num_prefix_tokens=0, grid_size=None, token_mask=None) -> PoolingOutput:
        check_tokens(tokens, self.hidden_size, token_mask)
        cls_token = self.cls_token.expand(tokens.shape[0], -1, -1)
        normed = self.attn_norm(torch.cat([cls_token, tokens], dim=1))
        head_dim = self.hidden_size // self.num_heads
        queries = self.q_proj(normed[:, 0]).view(-1, self.num_heads, head_dim)
        mask = F.pad(token_mask, (1, 0), value=True) if token_mask is not None else None  # the class token is real
        out, attn = folded_cross_attention(
            queries, self.k_proj.weight, normed, self.v_proj.weight, self.v_proj.bias, normed, head_dim**-0.5, mask
        )
        cls = cls_token[:, 0] + self.attn_scale * self.out_proj(out)
        cls = cls + self.mlp_scale * self.mlp(self.mlp_norm(cls))
        return PoolingOutput(pooled=self.final_norm(cls), attentions=attn[:, :, 1:])
