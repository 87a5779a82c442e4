"""Prediction heads: batched heads equal K separate per-step modules with the same weights."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from ssl_speech.nn.heads import LinearHeads, TransformerHeads, make_heads


class ReferenceLayer(nn.Module):
    """One post-norm causal Transformer layer from stock modules, then an optional projection."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, out_dim: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, bias=False, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn_in = nn.Linear(dim, ffn_dim)
        self.ffn_out = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, out_dim, bias=False) if out_dim != dim else None

    def forward(self, x: Tensor) -> Tensor:
        T = x.shape[1]
        future = torch.ones(T, T, dtype=torch.bool).triu(1)  # True = may not attend
        attended, _ = self.attn(x, x, x, attn_mask=future, need_weights=False)
        y = self.norm1(x + attended)
        y = self.norm2(y + self.ffn_out(torch.relu(self.ffn_in(y))))
        return y if self.proj is None else self.proj(y)


def reference_layers(heads: TransformerHeads) -> list[ReferenceLayer]:
    """K reference layers carrying the batched module's weights."""
    layers = []
    for k in range(heads.num_steps):
        layer = ReferenceLayer(heads.in_dim, heads.num_heads, heads.ffn_dim, heads.out_dim)
        with torch.no_grad():
            layer.attn.in_proj_weight.copy_(heads.qkv_weight[:, k].t())
            layer.attn.out_proj.weight.copy_(heads.attn_out_weight[k].t())
            layer.norm1.weight.copy_(heads.norm1_weight[k])
            layer.norm1.bias.copy_(heads.norm1_bias[k])
            layer.ffn_in.weight.copy_(heads.ffn_in_weight[k].t())
            layer.ffn_in.bias.copy_(heads.ffn_in_bias[k])
            layer.ffn_out.weight.copy_(heads.ffn_out_weight[k].t())
            layer.ffn_out.bias.copy_(heads.ffn_out_bias[k])
            layer.norm2.weight.copy_(heads.norm2_weight[k])
            layer.norm2.bias.copy_(heads.norm2_bias[k])
            if layer.proj is not None:
                layer.proj.weight.copy_(heads.proj_weight[k].t())
        layers.append(layer)
    return layers


def randomise_norms(heads: TransformerHeads) -> None:
    """Norms start at identity; perturb them so a swapped weight or bias would show."""
    with torch.no_grad():
        for p in (heads.norm1_weight, heads.norm1_bias, heads.norm2_weight, heads.norm2_bias):
            p.add_(0.3 * torch.randn_like(p))


@pytest.mark.parametrize("bias", [False, True])
def test_linear_heads_equal_separate_maps(bias: bool) -> None:
    torch.manual_seed(0)
    H, D, K = 12, 8, 5
    heads = LinearHeads(H, D, K, bias=bias)
    c = torch.randn(3, 7, H)
    out = heads(c)
    assert out.shape == (3, 7, K, D)
    for k in range(K):
        expected = c @ heads.weight[:, k * D : (k + 1) * D]
        if bias:
            expected = expected + heads.bias[k * D : (k + 1) * D]
        torch.testing.assert_close(out[:, :, k], expected)


@pytest.mark.parametrize("out_dim", [32, 24])
def test_transformer_heads_equal_separate_layers(out_dim: int) -> None:
    torch.manual_seed(0)
    H, K, nh, ffn = 32, 4, 4, 48
    heads = TransformerHeads(H, out_dim, K, num_heads=nh, ffn_dim=ffn)
    randomise_norms(heads)
    layers = reference_layers(heads)
    c = torch.randn(3, 11, H, requires_grad=True)
    out = heads(c)
    assert out.shape == (3, 11, K, out_dim)
    expected = torch.stack([layer(c) for layer in layers], dim=2)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)

    # Gradients agree too, for the input and for every step's weights.
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    grad_c, c.grad = c.grad, None
    (expected * weights).sum().backward()
    torch.testing.assert_close(grad_c, c.grad, atol=1e-5, rtol=1e-5)
    for k, layer in enumerate(layers):
        pairs = [
            (heads.qkv_weight.grad[:, k], layer.attn.in_proj_weight.grad.t()),
            (heads.attn_out_weight.grad[k], layer.attn.out_proj.weight.grad.t()),
            (heads.norm1_weight.grad[k], layer.norm1.weight.grad),
            (heads.ffn_in_weight.grad[k], layer.ffn_in.weight.grad.t()),
            (heads.ffn_in_bias.grad[k], layer.ffn_in.bias.grad),
            (heads.ffn_out_weight.grad[k], layer.ffn_out.weight.grad.t()),
            (heads.norm2_bias.grad[k], layer.norm2.bias.grad),
        ]
        if layer.proj is not None:
            pairs.append((heads.proj_weight.grad[k], layer.proj.weight.grad.t()))
        for batched, separate in pairs:
            torch.testing.assert_close(batched, separate, atol=1e-5, rtol=1e-4)


def test_transformer_heads_are_causal() -> None:
    torch.manual_seed(0)
    heads = TransformerHeads(16, 16, 3, num_heads=2, ffn_dim=32)
    c = torch.randn(2, 10, 16)
    changed = c.clone()
    changed[:, 6:] = torch.randn(2, 4, 16)
    torch.testing.assert_close(heads(c)[:, :6], heads(changed)[:, :6])
    assert not torch.allclose(heads(c)[:, 6:], heads(changed)[:, 6:])
    torch.testing.assert_close(heads(c)[:, :4], heads(c[:, :4]), atol=1e-6, rtol=1e-5)


def test_transformer_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    heads = TransformerHeads(16, 16, 2, num_heads=2, ffn_dim=32, dropout=0.5)
    c = torch.randn(2, 6, 16)
    heads.eval()
    torch.testing.assert_close(heads(c), heads(c))
    heads.train()
    assert not torch.allclose(heads(c), heads(c))


def test_heads_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    heads = TransformerHeads(16, 8, 3, num_heads=2, ffn_dim=32)
    c = torch.randn(2, 6, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = heads(c)
    assert out.shape == (2, 6, 3, 8)
    torch.testing.assert_close(out.float(), heads(c), atol=0.1, rtol=0.1)


def test_make_heads_and_validation() -> None:
    assert isinstance(make_heads("linear", 8, 4, 3), LinearHeads)
    transformer = make_heads("transformer", 8, 4, 3, num_heads=2, ffn_dim=16)
    assert isinstance(transformer, TransformerHeads)
    assert transformer.ffn_dim == 16
    with pytest.raises(ValueError, match="unknown head kind 'lstm'"):
        make_heads("lstm", 8, 4, 3)
    with pytest.raises(ValueError, match="num_heads=3 must divide in_dim=8"):
        TransformerHeads(8, 8, 2, num_heads=3)
    with pytest.raises(ValueError, match="num_steps must be a positive integer, got 0"):
        LinearHeads(8, 8, 0)
    with pytest.raises(ValueError, match=r"expects context of shape \(batch, frames, 8\)"):
        LinearHeads(8, 8, 2)(torch.randn(2, 5, 7))
