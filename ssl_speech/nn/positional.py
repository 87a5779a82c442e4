"""Positional encodings for the Transformer context, all defined for any sequence length.

- ``RotaryEmbedding`` (Su et al. 2021, RoFormer): rotates queries and keys by an angle
  proportional to their position, so attention scores depend only on relative offsets. Nothing
  is added to the residual stream and no table limits the length.
- ``sinusoidal_positions`` (Vaswani et al. 2017, section 3.5): absolute sin/cos codes added to
  the input, computed on the fly for the length at hand.
- ``ConvPositionalEmbedding`` (wav2vec 2.0, Baevski et al. 2020, section 2): a wide grouped
  convolution over time whose output is added to the input, a relative encoding with a span of
  ``kernel_size`` frames. The causal variant pads only on the left.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RotaryEmbedding(nn.Module):
    """Rotary position embedding for attention heads of size ``head_dim`` (even).

    Channel pairs ``(i, i + head_dim / 2)`` are rotated by ``position * base^(-2i / head_dim)``.

    Args:
        head_dim: size of one attention head.
        base: frequency base (10000 as RoFormer).
    """

    def __init__(self, head_dim: int, base: float = 10_000.0) -> None:
        super().__init__()
        if head_dim < 2 or head_dim % 2:
            raise ValueError(f"RotaryEmbedding: head_dim must be even and >= 2, got {head_dim}")
        self.head_dim = head_dim
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        # Derived from head_dim: recomputed at construction, kept out of checkpoints.
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def angles(self, length: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """``(cos, sin)``, each ``(length, head_dim / 2)`` float32, positions ``0..length-1``."""
        positions = torch.arange(length, device=device, dtype=torch.float32)
        theta = positions[:, None] * self.inv_freq.to(device)[None, :]
        return theta.cos(), theta.sin()

    @staticmethod
    def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Rotate ``x``: ``(B, heads, T, head_dim)`` with ``angles(T)``; same shape and dtype."""
        half = x.shape[-1] // 2
        x1, x2 = x.float().split(half, dim=-1)
        rotated = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
        return rotated.to(x.dtype)


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Sinusoidal absolute position codes ``(length, dim)`` float32 (``dim`` even).

    Channel ``2i`` is ``sin(p / 10000^(2i / dim))`` and channel ``2i + 1`` the cosine.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal_positions: dim must be even, got {dim}")
    positions = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10_000.0) / dim)
    )
    codes = torch.empty(length, dim, device=device, dtype=torch.float32)
    codes[:, 0::2] = torch.sin(positions * freq)
    codes[:, 1::2] = torch.cos(positions * freq)
    return codes


class ConvPositionalEmbedding(nn.Module):
    """wav2vec 2.0's convolutional relative positional embedding: ``x + GELU(conv(x))``.

    A grouped convolution over time of width ``kernel_size`` frames with weight normalisation
    over the kernel axis. Non-causal: the window of frame ``t`` is
    ``[t - kernel_size // 2, t + kernel_size - kernel_size // 2)``; causal: ``[t - kernel_size + 1,
    t]``, so no output depends on a later frame. Zero padding outside the sequence.

    Args:
        dim: channels (divisible by ``groups``).
        kernel_size: span in frames (128 in wav2vec 2.0).
        groups: convolution groups (16 in wav2vec 2.0).
        causal: pad on the left only.
    """

    def __init__(self, dim: int, kernel_size: int = 128, groups: int = 16, causal: bool = False):
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"ConvPositionalEmbedding: need kernel_size >= 1, got {kernel_size}")
        if groups < 1 or dim % groups:
            raise ValueError(
                f"ConvPositionalEmbedding: dim {dim} must be divisible by groups {groups}"
            )
        conv = nn.Conv1d(dim, dim, kernel_size, groups=groups)
        # wav2vec 2.0 initialisation: normal with std sqrt(4 / (kernel_size * dim)), zero bias.
        nn.init.normal_(conv.weight, mean=0.0, std=math.sqrt(4.0 / (kernel_size * dim)))
        nn.init.zeros_(conv.bias)
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.kernel_size = kernel_size
        self.causal = causal
        if causal:
            self._pad = (kernel_size - 1, 0)
        else:
            self._pad = (kernel_size // 2, kernel_size - 1 - kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, T, C)`` -> ``x`` plus its positional embedding, ``(B, T, C)``."""
        y = self.conv(F.pad(x.transpose(1, 2), self._pad))
        return x + F.gelu(y).transpose(1, 2)
