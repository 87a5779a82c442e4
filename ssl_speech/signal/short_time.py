"""Waveform input, analysis frames and the short-time power spectrum of the pseudo-labels.

The frame convention is the labels' and :mod:`ssl_speech.signal.baseline_features`': with ``hop``
samples per frame, a recording of ``S`` samples has ``T = S // hop`` frames and frame ``t``
describes the audio around the centre of its span ``[hop t, hop t + hop)``, i.e. sample
``hop t + hop / 2``. Analysis windows are centred there; the signal is extended by reflection at
the edges (zeros when it is shorter than the padding). The power spectrum is the very STFT of the
log-mel baseline (512-point FFT, 25 ms Hann window), at any hop.
"""

from __future__ import annotations

import copy
import math
from functools import lru_cache

import numpy as np
import torch
import torchaudio
from torch import Tensor

from ssl_speech.data.audio import SAMPLE_RATE
from ssl_speech.signal.baseline_features import HOP, WIN, _mel_transform

N_FFT = 512  # the log-mel baseline's FFT size
N_MELS = 40
POWER_FLOOR = 1e-10  # mean-square power below which a frame counts as digital silence
K_WEIGHTING_IR = 4096  # samples of the K-weighting impulse response used for its magnitude

__all__ = ["HOP", "N_FFT", "N_MELS", "POWER_FLOOR", "WIN", "as_batch", "check_hop", "frames",
           "k_weighting_gain", "mel_transform_on", "one_sided_sum", "power_spectrum", "unbatch"]

def as_batch(wav: Tensor | np.ndarray) -> tuple[Tensor, bool]:
    """``(B, S)`` float tensor and whether the input was a single ``(S,)`` waveform."""
    x = wav if isinstance(wav, Tensor) else torch.from_numpy(np.asarray(wav))
    if x.dim() == 3 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() not in (1, 2):
        raise ValueError(
            f"expected a waveform (samples,), a batch (batch, samples) or (batch, 1, samples), "
            f"got shape {tuple(x.shape)}; mix multi-channel audio down to mono first"
        )
    if not torch.is_floating_point(x):
        raise ValueError(f"expected a floating-point waveform in [-1, 1], got dtype {x.dtype}")
    single = x.dim() == 1
    return (x[None] if single else x).detach().float(), single


def check_hop(hop: int) -> None:
    if hop < 2 or hop % 2:
        raise ValueError(f"hop must be an even number of samples >= 2 (160 for 10 ms), got {hop}")


def frames(x: Tensor, hop: int, length: int, left: int | None = None) -> Tensor:
    """Analysis frames ``(B, T, length)`` of ``x`` ``(B, S)``, ``T = S // hop``.

    Frame ``t`` holds samples ``[c - left, c - left + length)`` with ``c = hop t + hop // 2`` the
    centre of the frame's span (``left`` defaults to ``length // 2``: a centred window). The
    signal is extended by reflection where the frames reach past its ends.
    """
    check_hop(hop)
    left = length // 2 if left is None else left
    B, S = x.shape
    T = S // hop
    if T == 0:
        return x.new_zeros(B, 0, length)
    pad_left = max(0, left - hop // 2)
    first = hop // 2 - left + pad_left  # index of frame 0's first sample in the padded signal
    pad_right = max(0, (T - 1) * hop + hop // 2 - left + length - S)
    mode = "reflect" if max(pad_left, pad_right) < S else "constant"
    padded = torch.nn.functional.pad(x[:, None], (pad_left, pad_right), mode=mode)[:, 0]
    return padded[:, first:].unfold(-1, length, hop)[:, :T]


def unbatch(value: Tensor, single: bool) -> Tensor:
    """``value[0]`` for a single-waveform input, else ``value`` unchanged."""
    return value[0] if single else value


@lru_cache(maxsize=8)
def mel_transform_on(device: str) -> torchaudio.transforms.MelSpectrogram:
    # The baseline's transform, cached per device (the CPU one is the baseline's own object).
    mel = _mel_transform(SAMPLE_RATE, N_FFT, WIN, HOP, N_MELS, 0.0, None)
    return mel if device == "cpu" else copy.deepcopy(mel).to(device)


def power_spectrum(x: Tensor, hop: int) -> Tensor:
    """``(B, T, N_FFT // 2 + 1)`` power of 25 ms Hann frames centred on each frame's span."""
    check_hop(hop)
    if hop > N_FFT:
        raise ValueError(f"hop {hop} is longer than the {N_FFT}-sample FFT frame; use hop <= 512")
    B, S = x.shape
    T = S // hop
    if T == 0:
        return x.new_zeros(B, 0, N_FFT // 2 + 1)
    pad = (N_FFT - hop) // 2
    mode = "reflect" if pad < S else "constant"
    padded = torch.nn.functional.pad(x[:, None], (pad, pad), mode=mode)[:, 0]
    spectrogram = mel_transform_on(str(x.device)).spectrogram
    # The baseline's STFT (hop 160) at any hop: same window and FFT, frames every `hop` samples.
    power = torch.stft(
        padded, N_FFT, hop_length=hop, win_length=WIN, window=spectrogram.window,
        center=False, return_complex=True,
    ).abs().pow(2)
    return power[..., :T].transpose(1, 2)


@lru_cache(maxsize=8)
def k_weighting_gain(device: str) -> Tensor:
    """``(N_FFT // 2 + 1,)`` power gain of BS.1770's K-weighting filters on the FFT grid."""
    impulse = torch.zeros(K_WEIGHTING_IR, dtype=torch.float64)
    impulse[0] = 1e-3  # torchaudio's filters clip their output to [-1, 1]: keep far below
    # The two biquads torchaudio's own BS.1770 loudness uses (high shelf, then high-pass).
    shelved = torchaudio.functional.treble_biquad(impulse, SAMPLE_RATE, 4.0, 1500.0,
                                                  1 / math.sqrt(2))
    response = torchaudio.functional.highpass_biquad(shelved, SAMPLE_RATE, 38.0, 0.5)
    spectrum = torch.fft.rfft(response / impulse[0]).abs().pow(2)
    step = K_WEIGHTING_IR // N_FFT  # the 512-point grid is every 8th bin of the 4096-point one
    return spectrum[::step].float().to(device)



def one_sided_sum(power: Tensor) -> Tensor:
    """Sum over the two-sided spectrum of a one-sided ``(..., N_FFT // 2 + 1)`` power."""
    return 2.0 * power.sum(-1) - power[..., 0] - power[..., -1]

