"""Prediction heads: map the context sequence to K predictions per frame.

A head takes the context output ``c`` of shape ``(B, T, H)`` and returns ``(B, T, K, D)``:
for every frame ``t`` and step ``k`` a prediction in the encoder's latent space ``D`` (CPC's
``W_k c_t``, aligned CPC's ``q_k``). Both heads compute all K steps at once, with no Python loop
over steps: the linear head is one matrix product, the Transformer head stacks its per-step
weights along a leading ``K`` axis and uses batched matrix products and one attention call with
``K`` folded into the batch.

- :class:`LinearHeads`: K linear maps (van den Oord et al. 2018, "Representation Learning with
  Contrastive Predictive Coding", section 2.2).
- :class:`TransformerHeads`: one causal Transformer layer per step applied to the whole context
  sequence, the default prediction network of CPC_audio (Rivière et al. 2020, "Unsupervised
  pretraining transfers well across languages"). CPC_audio adds a relative-position term whose
  size is tied to one fixed window length; we leave it out so any window length works (the
  recurrent context already carries order), and attention is causal so ``heads(c)[:, :n]``
  equals ``heads(c[:, :n])``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HEAD_KINDS = ("transformer", "linear")


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_input(c: Tensor, in_dim: int, owner: str) -> None:
    if c.dim() != 3 or c.shape[-1] != in_dim:
        raise ValueError(
            f"{owner} expects context of shape (batch, frames, {in_dim}), got {tuple(c.shape)}"
        )


class LinearHeads(nn.Module):
    """K linear prediction maps computed as one matrix product.

    Args:
        in_dim: context size H.
        out_dim: latent size D of each prediction.
        num_steps: number of prediction steps K.
        bias: add a learned bias to each prediction (CPC_audio uses none).

    Shapes:
        ``forward(c (B, T, H)) -> (B, T, K, D)``; ``out[:, :, k]`` is ``c @ weight[:, k]``.
    """

    def __init__(self, in_dim: int, out_dim: int, num_steps: int, bias: bool = False) -> None:
        super().__init__()
        _check_positive("in_dim", in_dim)
        _check_positive("out_dim", out_dim)
        _check_positive("num_steps", num_steps)
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.num_steps = num_steps
        # One (H, K·D) weight: the K maps side by side, step k in columns [k·D, (k+1)·D).
        self.weight = nn.Parameter(torch.empty(in_dim, num_steps * out_dim))
        self.bias = nn.Parameter(torch.empty(num_steps * out_dim)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_dim)  # nn.Linear's default range
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, c: Tensor) -> Tensor:
        _check_input(c, self.in_dim, type(self).__name__)
        out = torch.matmul(c, self.weight)
        if self.bias is not None:
            out = out + self.bias
        return out.view(*c.shape[:-1], self.num_steps, self.out_dim)

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, out_dim={self.out_dim}, num_steps={self.num_steps}, "
            f"bias={self.bias is not None}"
        )


class TransformerHeads(nn.Module):
    """K independent one-layer causal Transformers, batched over the steps.

    Step k's layer is a post-norm Transformer layer at width H, as CPC_audio's::

        y_k   = LayerNorm_k(c + MultiHeadAttention_k(c))          # causal, no projection bias
        out_k = LayerNorm_k'(y_k + W2_k relu(W1_k y_k + b1_k) + b2_k)

    followed, when ``out_dim != in_dim``, by a bias-free projection ``(H, D)`` of its own.
    Parameters carry a leading ``K`` axis; the query/key/value projection of all steps is a
    single ``(H, K·3H)`` product because every step reads the same input ``c``.

    Args:
        in_dim: context size H (the layers' width).
        out_dim: latent size D of each prediction.
        num_steps: number of prediction steps K.
        num_heads: attention heads per layer; must divide ``in_dim``.
        ffn_dim: hidden size of each layer's feed-forward block.
        dropout: dropout on attention weights and the feed-forward hidden units (training only).

    Shapes:
        ``forward(c (B, T, H)) -> (B, T, K, D)``.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_steps: int,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_positive("in_dim", in_dim)
        _check_positive("out_dim", out_dim)
        _check_positive("num_steps", num_steps)
        _check_positive("num_heads", num_heads)
        _check_positive("ffn_dim", ffn_dim)
        if in_dim % num_heads:
            raise ValueError(
                f"num_heads={num_heads} must divide in_dim={in_dim}; pick a divisor of {in_dim}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.num_steps = num_steps
        self.num_heads = num_heads
        self.ffn_dim = ffn_dim
        self.dropout = dropout
        K, H = num_steps, in_dim
        # qkv_weight[:, k] is step k's (H, 3H) projection: columns [0, H) query, [H, 2H) key,
        # [2H, 3H) value. The (H, K, 3H) layout makes the shared product a plain view.
        self.qkv_weight = nn.Parameter(torch.empty(H, K, 3 * H))
        self.attn_out_weight = nn.Parameter(torch.empty(K, H, H))
        self.norm1_weight = nn.Parameter(torch.empty(K, H))
        self.norm1_bias = nn.Parameter(torch.empty(K, H))
        self.ffn_in_weight = nn.Parameter(torch.empty(K, H, ffn_dim))
        self.ffn_in_bias = nn.Parameter(torch.empty(K, ffn_dim))
        self.ffn_out_weight = nn.Parameter(torch.empty(K, ffn_dim, H))
        self.ffn_out_bias = nn.Parameter(torch.empty(K, H))
        self.norm2_weight = nn.Parameter(torch.empty(K, H))
        self.norm2_bias = nn.Parameter(torch.empty(K, H))
        if out_dim != in_dim:
            self.proj_weight = nn.Parameter(torch.empty(K, H, out_dim))
        else:
            self.register_parameter("proj_weight", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Every (in, out) matrix uniform in ±1/sqrt(in), as nn.Linear; norms start at identity.
        H, F_ = self.in_dim, self.ffn_dim
        for weight, fan_in in (
            (self.qkv_weight, H),
            (self.attn_out_weight, H),
            (self.ffn_in_weight, H),
            (self.ffn_in_bias, H),
            (self.ffn_out_weight, F_),
            (self.ffn_out_bias, F_),
            (self.proj_weight, H),
        ):
            if weight is not None:
                bound = 1.0 / math.sqrt(fan_in)
                nn.init.uniform_(weight, -bound, bound)
        for weight in (self.norm1_weight, self.norm2_weight):
            nn.init.ones_(weight)
        for bias in (self.norm1_bias, self.norm2_bias):
            nn.init.zeros_(bias)

    @staticmethod
    def _layer_norm(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """Per-step LayerNorm: ``x (K, N, H)``, ``weight``/``bias (K, H)``."""
        normed = F.layer_norm(x, x.shape[-1:])
        return torch.addcmul(bias.unsqueeze(1), normed, weight.unsqueeze(1))

    def forward(self, c: Tensor) -> Tensor:
        _check_input(c, self.in_dim, type(self).__name__)
        B, T, H = c.shape
        K, nh = self.num_steps, self.num_heads
        flat = c.reshape(B * T, H)

        qkv = flat @ self.qkv_weight.view(H, K * 3 * H)  # (B·T, K·3H), all steps in one product
        qkv = qkv.view(B, T, K, 3, nh, H // nh).permute(3, 2, 0, 4, 1, 5)
        q, k, v = (x.reshape(K * B, nh, T, H // nh) for x in qkv.unbind(0))
        attn_dropout = self.dropout if self.training else 0.0
        attn = F.scaled_dot_product_attention(q, k, v, dropout_p=attn_dropout, is_causal=True)
        attn = attn.view(K, B, nh, T, H // nh).permute(0, 1, 3, 2, 4).reshape(K, B * T, H)

        y = torch.bmm(attn, self.attn_out_weight) + flat  # residual: every step reads c
        y = self._layer_norm(y, self.norm1_weight, self.norm1_bias)
        hidden = torch.baddbmm(self.ffn_in_bias.unsqueeze(1), y, self.ffn_in_weight).relu_()
        hidden = F.dropout(hidden, self.dropout, self.training)
        y = y + torch.baddbmm(self.ffn_out_bias.unsqueeze(1), hidden, self.ffn_out_weight)
        y = self._layer_norm(y, self.norm2_weight, self.norm2_bias)
        if self.proj_weight is not None:
            y = torch.bmm(y, self.proj_weight)
        return y.view(K, B, T, self.out_dim).permute(1, 2, 0, 3)  # (B, T, K, D)

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, out_dim={self.out_dim}, num_steps={self.num_steps}, "
            f"num_heads={self.num_heads}, ffn_dim={self.ffn_dim}, dropout={self.dropout}"
        )


def make_heads(
    kind: str,
    in_dim: int,
    out_dim: int,
    num_steps: int,
    num_heads: int = 8,
    ffn_dim: int = 2048,
    dropout: float = 0.0,
) -> LinearHeads | TransformerHeads:
    """Build the prediction heads an objective names by ``kind`` ("transformer" or "linear").

    ``num_heads``, ``ffn_dim`` and ``dropout`` apply to the Transformer heads only.
    """
    if kind == "transformer":
        return TransformerHeads(in_dim, out_dim, num_steps, num_heads, ffn_dim, dropout)
    if kind == "linear":
        return LinearHeads(in_dim, out_dim, num_steps)
    raise ValueError(f"unknown head kind {kind!r}; use one of {HEAD_KINDS}")
