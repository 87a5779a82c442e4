"""Frame-level pseudo-labels: signal descriptors that can serve as pretext-task targets.

Each extractor maps a waveform at 16 kHz to one value (or one vector) per encoder frame and
follows the frame convention of the labels and of :mod:`ssl_speech.signal.baseline_features`:
with ``hop`` samples per frame, a recording of ``S`` samples has ``T = S // hop`` frames and
frame ``t`` describes the audio around the centre of its span ``[hop t, hop t + hop)``, i.e.
sample ``hop t + hop / 2``. Analysis windows are centred there; the signal is extended by
reflection at the edges (zeros when it is shorter than the padding).

Inputs: ``(S,)`` gives ``(T,)`` or ``(T, D)``; a batch ``(B, S)`` or ``(B, 1, S)`` gives
``(B, T)`` or ``(B, T, D)``. Everything is vectorised over the batch and the frames and runs on
the input's device. Values are NaN where a descriptor is undefined (F0 and HNR of unvoiced
frames; spectral shape and periodicity of digital silence).

========================  ====  =================================================================
name                      dims  value and unit
========================  ====  =================================================================
``f0``                    1     fundamental frequency in Hz (YIN-style tracker below), NaN where
                                unvoiced
``voicing``               1     periodicity in [0, 1]: peak normalised autocorrelation at the
                                chosen period
``hnr``                   1     harmonics-to-noise ratio in dB (Boersma 1993), NaN where unvoiced
``f0_torchaudio``         1     torchaudio's ``detect_pitch_frequency`` in Hz (no voicing
                                decision: defined everywhere), for comparison
``loudness``              1     K-weighted (ITU-R BS.1770) power of the 25 ms frame in LKFS (dB)
``rms``                   1     RMS level of the 25 ms Hann-weighted frame in dBFS
``zcr``                   1     zero crossings per second (Hz) in the 25 ms frame
``spectral_centroid``     1     power-weighted mean frequency, Hz
``spectral_flatness``     1     geometric over arithmetic mean of the power spectrum, dB (<= 0)
``spectral_rolloff``      1     frequency below which 85 % of the power lies, Hz
``log_mel``               40    natural log of mel band power (as the log-mel baseline)
``mfcc``                  13    orthonormal DCT of ``log_mel`` (as the MFCC baseline, no deltas)
``f0_praat``              1     Praat's autocorrelation pitch (Hz, NaN unvoiced); optional extra
                                ``praat-parselmouth``, CPU, per utterance
``noise``                 1     white noise independent of the audio's content (seeded from its
                                samples): the noise control of the utility estimate
========================  ====  =================================================================

The spectral descriptors all come from one short-time power spectrum, the very STFT of the
log-mel baseline (512-point FFT, 25 ms Hann window, the filterbank shared with it), so
``log_mel`` equals :func:`~ssl_speech.signal.baseline_features.log_mel_features` frame for frame.

The F0 tracker is :func:`ssl_speech.signal.pitch.pitch_track` (YIN candidates, a Viterbi path).
On the embedded corpus, whose true F0 is known, it makes fewer gross errors than Praat's
autocorrelation method and far fewer than torchaudio's ``detect_pitch_frequency`` (figures in
tests/signal/test_pitch.py); its agreement with Praat on real recordings is in
docs/pseudo_label_utility.md. Framing and the power spectrum: :mod:`ssl_speech.signal.short_time`;
the descriptors themselves: :mod:`ssl_speech.signal.descriptors`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from ssl_speech.signal import descriptors as d
from ssl_speech.signal.descriptors import N_MFCC, Analysis
from ssl_speech.signal.short_time import HOP, N_MELS, unbatch


@dataclass(frozen=True)
class PseudoLabel:
    """A registered extractor: its name, number of dimensions, unit and optional dependency."""

    name: str
    dims: int
    unit: str
    compute: Callable[[Analysis], Tensor]
    requires: str | None = None

    @property
    def available(self) -> bool:
        if self.requires is None:
            return True
        try:
            __import__(self.requires)
        except ImportError:
            return False
        return True


PSEUDO_LABELS: dict[str, PseudoLabel] = {
    p.name: p
    for p in (
        PseudoLabel("f0", 1, "Hz", d.f0),
        PseudoLabel("voicing", 1, "periodicity in [0, 1]", d.voicing),
        PseudoLabel("hnr", 1, "dB", d.hnr),
        PseudoLabel("f0_torchaudio", 1, "Hz", d.f0_torchaudio),
        PseudoLabel("loudness", 1, "LKFS (dB)", d.loudness),
        PseudoLabel("rms", 1, "dBFS", d.rms),
        PseudoLabel("zcr", 1, "crossings per second (Hz)", d.zcr),
        PseudoLabel("spectral_centroid", 1, "Hz", d.spectral_centroid),
        PseudoLabel("spectral_flatness", 1, "dB", d.spectral_flatness),
        PseudoLabel("spectral_rolloff", 1, "Hz", d.spectral_rolloff),
        PseudoLabel("log_mel", N_MELS, "log power", d.log_mel),
        PseudoLabel("mfcc", N_MFCC, "cepstral coefficient", d.mfcc),
        PseudoLabel("f0_praat", 1, "Hz", d.f0_praat, requires="parselmouth"),
        PseudoLabel("noise", 1, "standard normal (a control)", d.noise),
    )
}


def available_pseudo_labels() -> list[str]:
    """Names of the extractors usable here (those whose optional dependency is installed)."""
    return [name for name, p in PSEUDO_LABELS.items() if p.available]


def check_names(names: Iterable[str]) -> list[str]:
    """The names as a list; raises with the valid choices for an unknown one."""
    names = list(names)
    unknown = [n for n in names if n not in PSEUDO_LABELS]
    if unknown:
        raise ValueError(
            f"unknown pseudo-label(s) {unknown}; choose from {sorted(PSEUDO_LABELS)}"
        )
    return names


def extract_pseudo_labels(
    names: Iterable[str], wav: Tensor | np.ndarray, hop: int = HOP
) -> dict[str, Tensor]:
    """Several pseudo-labels of the same audio, sharing the STFT and the pitch analysis.

    Args:
        names: registered names (see :data:`PSEUDO_LABELS`).
        wav: ``(S,)``, ``(B, S)`` or ``(B, 1, S)`` float waveform at 16 kHz.
        hop: samples per frame (160 for 10 ms frames, 320 for 20 ms).

    Returns:
        ``{name: (T,) | (T, D)}`` for a single waveform, ``{name: (B, T) | (B, T, D)}`` for a
        batch, float32 on the input's device, ``T = S // hop``.
    """
    analysis = Analysis(wav, hop)
    out = {}
    for name in check_names(names):
        out[name] = unbatch(PSEUDO_LABELS[name].compute(analysis).float(), analysis.single)
    return out


def extract_pseudo_label(name: str, wav: Tensor | np.ndarray, hop: int = HOP) -> Tensor:
    """One pseudo-label: ``(T,)`` or ``(T, D)`` (``(B, T, ...)`` for a batch); see the table
    in the module docstring for units."""
    return extract_pseudo_labels([name], wav, hop)[name]
