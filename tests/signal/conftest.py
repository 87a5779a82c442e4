"""Test signals shared by the signal tests: harmonic tones and white noise at 16 kHz."""

from __future__ import annotations

import math

import pytest
import torch

SR = 16000


def make_harmonic(f0: float, seconds: float = 1.0, harmonics: int = 8, amplitude: float = 0.3,
             noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    t = torch.arange(int(seconds * SR), dtype=torch.float64) / SR
    x = sum(amplitude / k * torch.sin(2 * math.pi * f0 * k * t + k) for k in range(1, harmonics + 1)
            if f0 * k < SR / 2)
    g = torch.Generator().manual_seed(seed)
    return (x + noise * torch.randn(t.shape, generator=g, dtype=torch.float64)).float()


def make_white_noise(seconds: float = 1.0, scale: float = 0.1, seed: int = 0) -> torch.Tensor:
    return scale * torch.randn(int(seconds * SR), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def harmonic():
    """``harmonic(f0, seconds=1.0, harmonics=8, amplitude=0.3, noise=0.0, seed=0)``: a
    harmonic tone (plus white noise of standard deviation ``noise``), float32 ``(S,)``."""
    return make_harmonic


@pytest.fixture
def white_noise():
    """``white_noise(seconds=1.0, scale=0.1, seed=0)``: float32 ``(S,)``."""
    return make_white_noise
