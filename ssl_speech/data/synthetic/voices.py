"""Talkers and recording conditions of the embedded corpus, drawn at random, and the frame grid
of the synthesis whose FFT bins a microphone response is given on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssl_speech.data.audio import SAMPLE_RATE
from ssl_speech.data.synthetic.inventory import INVENTORY

HOP = 80  # samples between synthesis frames (5 ms)
WINDOW = 2 * HOP  # periodic Hann of twice the hop sums to one
NFFT = 512  # room for the resonators' ringing after each frame
LEAD = 32  # zeros before each frame: room for the zero-phase noise filters' pre-ringing
FREQS = np.fft.rfftfreq(NFFT, 1.0 / SAMPLE_RATE)  # (K,) Hz
SPEAKER_FORMANT_SD = 0.05  # s.d. of a speaker's log formant targets around the table


@dataclass(frozen=True, eq=False)
class Speaker:
    """A synthetic talker.

    Attributes:
        female: sex, which sets the ranges of the other values.
        vtl: formant scale (1.0 is the adult male reference; a shorter tract is larger).
        f0_hz: mean fundamental frequency. f0_range_st: intonation range in semitones.
        tilt_hz: corner of an extra first-order low-pass on the voice source (spectral tilt).
        open_quotient: open phase of the glottal cycle, fraction of the period.
        breathiness: aspiration noise mixed into voicing, relative amplitude.
        jitter: relative s.d. of pulse timing. shimmer: s.d. of the log pulse amplitude.
        rate: speaking rate (1.0 normal, larger is faster).
        bandwidth_scale: factor on all formant bandwidths.
        coarticulation_ms: width of the kernel that smooths formant targets across phones.
        formant_offsets: ``(num_phones, 3)`` per-phone factors on F1-F3 (idiolect).
    """

    female: bool
    vtl: float
    f0_hz: float
    f0_range_st: float
    tilt_hz: float
    open_quotient: float
    breathiness: float
    jitter: float
    shimmer: float
    rate: float
    bandwidth_scale: float
    coarticulation_ms: float
    formant_offsets: np.ndarray


def draw_speaker(rng: np.random.Generator, female: bool) -> Speaker:
    """A random talker; women have shorter tracts and higher voices on average."""
    vtl = float(np.clip(rng.normal(1.16 if female else 1.0, 0.05), 0.88, 1.32))
    f0 = float(np.clip(np.exp(rng.normal(np.log(205.0 if female else 115.0), 0.13)), 80, 300))
    return Speaker(
        female=female,
        vtl=vtl,
        f0_hz=f0,
        f0_range_st=float(rng.uniform(2.5, 8.0)),
        tilt_hz=float(np.exp(rng.uniform(np.log(1200.0), np.log(6000.0)))),
        open_quotient=float(rng.uniform(0.5, 0.8) if female else rng.uniform(0.4, 0.7)),
        breathiness=float(np.exp(rng.uniform(np.log(0.03), np.log(0.35 if female else 0.15)))),
        jitter=float(rng.uniform(0.005, 0.02)),
        shimmer=float(rng.uniform(0.03, 0.12)),
        rate=float(rng.uniform(0.8, 1.25)),
        bandwidth_scale=float(rng.uniform(0.8, 1.4)),
        coarticulation_ms=float(rng.uniform(40.0, 80.0)),
        formant_offsets=np.exp(rng.normal(0.0, SPEAKER_FORMANT_SD, (len(INVENTORY), 3))),
    )


@dataclass(frozen=True, eq=False)
class Channel:
    """A recording condition (one per chapter).

    Attributes:
        rt60_s: reverberation time. direct_to_reverb_db: energy ratio of direct sound to tail.
        snr_db: speech-to-background-noise ratio. noise_slope: background noise spectrum ~ f^-s.
        eq_db: ``(K,)`` microphone response in dB on the FFT grid :data:`FREQS`.
        level_db: RMS level of active speech in dB full scale.
    """

    rt60_s: float
    direct_to_reverb_db: float
    snr_db: float
    noise_slope: float
    eq_db: np.ndarray
    level_db: float


def draw_channel(rng: np.random.Generator) -> Channel:
    """A random room, microphone and noise: smooth bumps in log frequency and a high-pass."""
    logf = np.log2(np.maximum(FREQS, 20.0) / 1000.0)
    eq = rng.uniform(-2.0, 2.0) * logf  # dB per octave around 1 kHz
    for _ in range(3):
        centre, width = rng.uniform(-2.5, 2.8), rng.uniform(0.3, 1.2)
        eq += rng.uniform(-4.0, 4.0) * np.exp(-0.5 * ((logf - centre) / width) ** 2)
    highpass = rng.uniform(60.0, 160.0)
    eq += 10.0 * np.log10(1.0 / (1.0 + (highpass / np.maximum(FREQS, 1.0)) ** 4))
    return Channel(
        rt60_s=float(rng.uniform(0.1, 0.45)),
        direct_to_reverb_db=float(rng.uniform(3.0, 15.0)),
        snr_db=float(rng.uniform(6.0, 30.0)),
        noise_slope=float(rng.uniform(0.0, 2.0)),
        eq_db=eq.astype(np.float32),
        level_db=float(rng.uniform(-30.0, -20.0)),
    )
