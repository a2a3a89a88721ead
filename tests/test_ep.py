"""EP pooling: equal to the naive-order formula of the paper, per image, with clear errors on impossible shapes."""

import pytest
import torch

from hf_efficient_probing.probes import EfficientProbing, ProbeHead, valid_num_queries


def naive_ep(tokens, queries, value_weight, value_bias=None, token_mask=None):
    """The formula as written: project every token, then each query reads its slice of the values."""
    dim = tokens.shape[-1]
    num_queries = queries.shape[1]
    logits = queries @ tokens.transpose(1, 2) / dim**0.5
    if token_mask is not None:
        logits = logits.masked_fill(~token_mask[:, None], float("-inf"))
    attn = torch.softmax(logits, dim=-1)  # B, M, N
    values = tokens @ value_weight.T  # B, N, D/D_o
    if value_bias is not None:
        values = values + value_bias
    group = values.shape[-1] // num_queries
    outputs = [attn[:, j].unsqueeze(1) @ values[..., j * group : (j + 1) * group] for j in range(num_queries)]
    return torch.cat(outputs, dim=-1).squeeze(1), attn


@pytest.mark.parametrize(
    "num_queries, d_out, num_tokens, dim",
    [(32, 1, 196, 64), (4, 2, 17, 32), (8, 4, 50, 96), (1, 1, 3, 16), (16, 8, 7, 128)],
)
@pytest.mark.parametrize("value_bias", [False, True])
def test_ep_equals_naive_order(num_queries, d_out, num_tokens, dim, value_bias):
    torch.manual_seed(0)
    pooling = EfficientProbing(dim, num_queries=num_queries, d_out=d_out, value_bias=value_bias)
    if value_bias:
        torch.nn.init.normal_(pooling.value.bias)
    tokens = torch.randn(3, num_tokens, dim)
    output = pooling(tokens)
    expected, expected_attn = naive_ep(tokens, pooling.queries, pooling.value.weight, pooling.value.bias)
    assert output.pooled.shape == (3, dim // d_out)
    torch.testing.assert_close(output.pooled, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(output.attentions, expected_attn)
    torch.testing.assert_close(output.attentions.sum(-1), torch.ones(3, num_queries))


def test_ep_no_cross_batch_leakage():
    torch.manual_seed(0)
    head = ProbeHead(EfficientProbing(32, num_queries=4), num_labels=5).eval()
    tokens = torch.randn(6, 10, 32)
    batch_logits = head(tokens).logits
    for i in range(6):
        torch.testing.assert_close(head(tokens[i : i + 1]).logits, batch_logits[i : i + 1], rtol=1e-5, atol=1e-6)


def test_ep_initialisation_and_parameters():
    torch.manual_seed(0)
    pooling = EfficientProbing(768, num_queries=32)
    assert pooling.queries.shape == (1, 32, 768)
    assert abs(pooling.queries.std().item() - 0.02) < 0.002
    assert pooling.value.bias is None
    assert sum(p.numel() for p in pooling.parameters()) == 32 * 768 + 768 * 768


def test_ep_invalid_shape_lists_valid_values():
    with pytest.raises(ValueError, match=r"valid num_queries are \[1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64"):
        EfficientProbing(768, num_queries=10)
    with pytest.raises(ValueError, match="d_out must divide"):
        EfficientProbing(768, num_queries=4, d_out=5)
    with pytest.raises(ValueError, match="num_queries=0"):
        EfficientProbing(768, num_queries=0)
    assert valid_num_queries(12, 2) == [1, 2, 3, 6]


def test_ep_rejects_tokens_of_another_width():
    with pytest.raises(ValueError, match="hidden size 32"):
        EfficientProbing(32, num_queries=4)(torch.randn(2, 5, 16))


@pytest.mark.parametrize("masked", [False, True])
def test_eps_pooled_together_equal_each_alone_in_output_and_gradient(masked):
    """A grid pools its EP members of one group size as one EP; each must still get the output and gradients of its
    own naive-order formula (two share a group size: M=4 and M=4 with d_out=1, M=2 with d_out=2; one does not)."""
    torch.manual_seed(0)
    dim = 32
    poolings = [
        EfficientProbing(dim, 4),
        EfficientProbing(dim, 4, value_bias=True),
        EfficientProbing(dim, 2, d_out=2),
        EfficientProbing(dim, 8),
    ]
    torch.nn.init.normal_(poolings[1].value.bias)
    tokens = torch.randn(3, 10, dim)
    mask = torch.rand(3, 10) > 0.3 if masked else None
    mask = None if mask is None else mask.index_fill(1, torch.tensor([0]), True)
    for group in ([0, 2], [0, 1, 2, 3]):  # one group size (fused), and a mix (each alone)
        members = [poolings[i] for i in group]
        together = EfficientProbing.pool_together(members, tokens, token_mask=mask)
        sum(output.pooled.square().sum() for output in together).backward()
        fused_grads = [(p.queries.grad.clone(), p.value.weight.grad.clone()) for p in members]
        for pooling in members:
            pooling.zero_grad()
        for pooling, output, grads in zip(members, together, fused_grads, strict=True):
            expected, attn = naive_ep(tokens, pooling.queries, pooling.value.weight, pooling.value.bias, mask)
            torch.testing.assert_close(output.pooled, expected, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(output.attentions, attn)
            expected.square().sum().backward()
            torch.testing.assert_close(grads[0], pooling.queries.grad, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(grads[1], pooling.value.weight.grad, rtol=1e-5, atol=1e-6)
            pooling.zero_grad()
