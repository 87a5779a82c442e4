"""The descriptors behind the registered pseudo-labels, each a function of one analysis.

An :class:`Analysis` holds a batch of waveforms and computes, on first use, what several
descriptors share: the short-time power spectrum (:mod:`ssl_speech.signal.short_time`) and the
pitch track (:mod:`ssl_speech.signal.pitch`). Each descriptor maps it to ``(B, T)`` or
``(B, T, D)`` values; :mod:`ssl_speech.signal.pseudo_labels` registers them with names and units.
"""

from __future__ import annotations

import math
import zlib
from functools import cached_property

import numpy as np
import torch
import torchaudio
from torch import Tensor

from ssl_speech.data.audio import SAMPLE_RATE
from ssl_speech.signal.pitch import F0_MAX, F0_MIN, PitchTrack, pitch_track, praat_pitch
from ssl_speech.signal.short_time import (
    N_FFT,
    N_MELS,
    POWER_FLOOR,
    WIN,
    as_batch,
    check_hop,
    frames,
    k_weighting_gain,
    mel_transform_on,
    one_sided_sum,
    power_spectrum,
)

N_MFCC = 13
TORCHAUDIO_MEDIAN = 30  # frames of detect_pitch_frequency's median filter (its default)
ROLLOFF = 0.85


class Analysis:
    """Shared intermediate results of one batch, computed on first use."""

    def __init__(self, wav: Tensor | np.ndarray, hop: int) -> None:
        check_hop(hop)
        self.x, self.single = as_batch(wav)
        self.hop = hop

    @cached_property
    def power(self) -> Tensor:
        return power_spectrum(self.x, self.hop)

    @cached_property
    def window_power(self) -> Tensor:
        """``(B, T)`` Hann-weighted mean square of each 25 ms frame (Parseval on ``power``)."""
        window = mel_transform_on(str(self.x.device)).spectrogram.window
        return one_sided_sum(self.power) / (N_FFT * window.pow(2).sum())

    @cached_property
    def silent(self) -> Tensor:
        return self.window_power < POWER_FLOOR

    @cached_property
    def pitch(self) -> PitchTrack:
        return pitch_track(self.x, self.hop)


def f0(a: Analysis) -> Tensor:
    return a.pitch.f0


def voicing(a: Analysis) -> Tensor:
    return a.pitch.periodicity


def hnr(a: Analysis) -> Tensor:
    # Boersma (1993): HNR = 10 log10(r / (1 - r)) with r the normalised autocorrelation at the
    # period; r is clipped to [0.001, 0.999], i.e. HNR to about +-30 dB.
    r = a.pitch.periodicity.clamp(1e-3, 1.0 - 1e-3)
    ratio = 10.0 * torch.log10(r / (1.0 - r))
    return torch.where(a.pitch.voiced, ratio, torch.full_like(ratio, math.nan))


def f0_torchaudio(a: Analysis) -> Tensor:
    B, S = a.x.shape
    T = S // a.hop
    if T <= TORCHAUDIO_MEDIAN // 2:  # its median filter needs more frames than that
        return a.x.new_full((B, T), math.nan)
    pitch = torchaudio.functional.detect_pitch_frequency(
        a.x, SAMPLE_RATE, frame_time=a.hop / SAMPLE_RATE, win_length=TORCHAUDIO_MEDIAN,
        freq_low=int(F0_MIN), freq_high=int(F0_MAX),
    )
    # Its frames are [hop j, hop j + hop) like ours, but its median filter (output j: the median
    # over frames j - 14 ... j + 15) leaves out the last 15 frames: repeat the last value.
    missing = T - pitch.shape[-1]
    return torch.nn.functional.pad(pitch[:, None], (0, max(missing, 0)), mode="replicate")[
        :, 0, :T]


def _level_db(power: Tensor, offset: float = 0.0) -> Tensor:
    return offset + 10.0 * torch.log10(power.clamp_min(POWER_FLOOR))


def loudness(a: Analysis) -> Tensor:
    gain = k_weighting_gain(str(a.x.device))
    window = mel_transform_on(str(a.x.device)).spectrogram.window
    weighted = one_sided_sum(a.power * gain) / (N_FFT * window.pow(2).sum())
    return _level_db(weighted, offset=-0.691)  # BS.1770's offset: LKFS of a 997 Hz sine


def rms(a: Analysis) -> Tensor:
    return _level_db(a.window_power)


def zcr(a: Analysis) -> Tensor:
    framed = frames(a.x, a.hop, WIN)
    crossings = ((framed[..., 1:] * framed[..., :-1]) < 0).sum(-1).float()
    return crossings * SAMPLE_RATE / (WIN - 1)


def _frequencies(a: Analysis) -> Tensor:
    return torch.arange(N_FFT // 2 + 1, device=a.x.device) * (SAMPLE_RATE / N_FFT)


def _undefined_in_silence(value: Tensor, a: Analysis) -> Tensor:
    return torch.where(a.silent, torch.full_like(value, math.nan), value)


def spectral_centroid(a: Analysis) -> Tensor:
    p = a.power
    centroid = (p * _frequencies(a)).sum(-1) / p.sum(-1).clamp_min(1e-30)
    return _undefined_in_silence(centroid, a)


def spectral_flatness(a: Analysis) -> Tensor:
    p = a.power[..., 1:].clamp_min(1e-20)  # DC left out: an offset is not spectral shape
    flatness = 10.0 * (p.log().mean(-1) - p.mean(-1).log()) / math.log(10.0)
    return _undefined_in_silence(flatness, a)


def spectral_rolloff(a: Analysis) -> Tensor:
    p = a.power
    cumulative = p.cumsum(-1)
    reached = cumulative >= ROLLOFF * cumulative[..., -1:]
    rolloff = _frequencies(a)[reached.float().argmax(-1)]
    return _undefined_in_silence(rolloff, a)


def log_mel(a: Analysis) -> Tensor:
    fb = mel_transform_on(str(a.x.device)).mel_scale.fb  # (freq, n_mels)
    return torch.log(a.power @ fb + 1e-6)  # the baseline's eps


def mfcc(a: Analysis) -> Tensor:
    dct = torchaudio.functional.create_dct(N_MFCC, N_MELS, norm="ortho").to(a.x.device)
    return log_mel(a) @ dct


def f0_praat(a: Analysis) -> Tensor:
    return praat_pitch(a.x, a.hop)


def noise(a: Analysis) -> Tensor:
    """White noise, one standard normal value per frame, independent of the audio's content: a
    control target. Each row's generator is seeded from its samples' bytes, so the same audio
    always gets the same values and the values do not depend on the batch around it."""
    B, S = a.x.shape
    out = torch.empty(B, S // a.hop)
    for b, row in enumerate(a.x.detach().cpu().numpy()):
        seed = zlib.crc32(np.ascontiguousarray(row).tobytes())
        out[b] = torch.randn(S // a.hop, generator=torch.Generator().manual_seed(seed))
    return out.to(a.x.device)
