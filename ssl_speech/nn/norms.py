"""Normalisation layers for convolutional feature maps of shape ``(B, C, T)``.

Two axes are normalised here, and the difference matters for streaming:

- ``ChannelNorm`` normalises each frame over its channels. It couples no frames, so an encoder
  built from it gives the same output for a frame whatever window the frame sits in.
- ``TimeInstanceNorm`` normalises each channel over the time axis of the window (instance norm;
  also wav2vec 2.0's ``GroupNorm(C, C)``). Its output depends on the whole window.

Both compute their statistics in float32 with autocast disabled: in bfloat16 a mean and a
variance over hundreds of values lose most of their digits. They return float32; the next
layer under autocast casts back to the low-precision type.

``instance_norm_over_time`` is the time-axis normalisation as a plain function on
``(B, T, C)`` sequences (float32, no affine parameters), for targets: TriNet's teacher layers,
MGF's span targets, the frozen teacher's features.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORM_CHOICES = ("channel", "batch", "instance", "layer", "group", "none")


def instance_norm_over_time(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Each channel of each sequence to zero mean and unit (biased) variance over time.

    ``x``: ``(B, T, C)`` -> ``(B, T, C)`` float32.
    """
    x = x.float()
    mean = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, keepdim=True, unbiased=False)
    return (x - mean) * torch.rsqrt(var + eps)


class ChannelNorm(nn.Module):
    """Per-frame normalisation over channels with a learnable per-channel scale and bias.

    ``y[b, c, t] = (x[b, c, t] - mean_c x[b, :, t]) / sqrt(var_c x[b, :, t] + eps) * w[c] + b[c]``

    With ``unbiased=True`` the variance divides by ``C - 1`` as CPC_audio's ChannelNorm does;
    with ``unbiased=False`` this is ``LayerNorm`` over the channel axis (wav2vec 2.0 large).

    Args:
        num_channels: C.
        eps: added to the variance.
        unbiased: use the ``C - 1`` variance denominator.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, unbiased: bool = True) -> None:
        super().__init__()
        if num_channels < 2:
            raise ValueError(f"ChannelNorm needs >= 2 channels, got num_channels={num_channels}")
        self.num_channels = num_channels
        self.eps = eps
        self.unbiased = unbiased
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        # The unbiased form is a rescaled layer norm, so the fused kernel does the work:
        # (x - m) / sqrt(v * C / (C - 1) + eps) = s (x - m) / sqrt(v + s^2 eps), s^2 = (C - 1) / C.
        self._scale = math.sqrt((num_channels - 1) / num_channels) if unbiased else 1.0

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, C, T)`` -> ``(B, C, T)`` float32."""
        return self.normalize_last(x.transpose(1, 2)).transpose(1, 2)

    def normalize_last(self, x: Tensor) -> Tensor:
        """The same normalisation for channels on the last axis: ``(..., C)`` -> float32.

        On a contiguous frames-major tensor (``(B, T, C)``) the fused layer-norm kernel reads
        and writes it in place order; the ``(B, C, T)`` form costs a transposed copy each way.
        """
        with torch.autocast(device_type=x.device.type, enabled=False):
            return F.layer_norm(
                x.float(),
                (self.num_channels,),
                self.weight.float() * self._scale,
                self.bias.float(),
                self.eps * self._scale**2,
            )

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, unbiased={self.unbiased}"


class TimeInstanceNorm(nn.Module):
    """Per-channel normalisation over the time axis of each window, with affine parameters.

    ``y[b, c, t] = (x[b, c, t] - mean_t x[b, c, :]) / sqrt(var_t x[b, c, :] + eps) * w[c] + b[c]``
    (biased variance, as ``nn.InstanceNorm1d`` and ``nn.GroupNorm(C, C)``). Statistics are
    always computed in float32, also under bfloat16 autocast.

    Args:
        num_channels: C.
        eps: added to the variance.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, C, T)`` -> ``(B, C, T)`` float32."""
        if x.shape[-1] < 1:
            raise ValueError(f"TimeInstanceNorm needs >= 1 frame, got shape {tuple(x.shape)}")
        with torch.autocast(device_type=x.device.type, enabled=False):
            # GroupNorm with one channel per group is instance norm, and unlike
            # F.instance_norm it accepts a single frame.
            return F.group_norm(
                x.float(), self.num_channels, self.weight.float(), self.bias.float(), self.eps
            )

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}"


def check_norm(name: str, choices: tuple[str, ...], owner: str) -> None:
    """Raise ``ValueError`` naming ``name`` and the valid ``choices`` if ``name`` is not one."""
    if name not in choices:
        raise ValueError(f"{owner}: unknown norm {name!r}; choose one of {', '.join(choices)}")


def make_norm(name: str, num_channels: int) -> nn.Module:
    """A normalisation layer for ``(B, C, T)`` feature maps.

    Args:
        name: ``"channel"`` (CPC_audio ChannelNorm, per frame over channels, unbiased variance),
            ``"layer"`` (per frame over channels, biased variance: LayerNorm over C),
            ``"batch"`` (``nn.BatchNorm1d``: statistics over batch and time while training,
            running statistics in eval mode), ``"instance"`` / ``"group"`` (per channel over the
            window's time axis; ``"group"`` is wav2vec 2.0's ``GroupNorm(C, C)``, the same
            operation), ``"none"`` (identity).
        num_channels: C.
    """
    check_norm(name, NORM_CHOICES, "make_norm")
    if name == "channel":
        return ChannelNorm(num_channels, eps=1e-5, unbiased=True)
    if name == "layer":
        return ChannelNorm(num_channels, eps=1e-5, unbiased=False)
    if name == "batch":
        return nn.BatchNorm1d(num_channels)
    if name in ("instance", "group"):
        return TimeInstanceNorm(num_channels)
    return nn.Identity()


def is_frame_local(name: str) -> bool:
    """Whether a norm keeps every frame independent of the rest of the window (in eval mode)."""
    return name not in ("instance", "group")
