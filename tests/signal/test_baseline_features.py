"""Baseline features: frame counts and alignment with the 10 ms label frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_speech.signal.baseline_features import (
    baseline_features,
    log_mel_features,
    mfcc_features,
)

SR = 16000


@pytest.mark.parametrize("samples", [0, 159, 160, 161, 319, 320, 16000, 16159, 16160])
def test_frame_count_is_samples_floor_div_160(samples):
    wav = np.random.default_rng(samples).normal(scale=0.1, size=samples).astype(np.float32)
    assert log_mel_features(wav).shape == (samples // 160, 40)
    assert mfcc_features(wav).shape == (samples // 160, 39)
    assert mfcc_features(wav, n_mfcc=20, deltas=False).shape == (samples // 160, 20)


def _energy(wav: np.ndarray) -> np.ndarray:
    """Total mel power per frame ``(T,)``."""
    return np.exp(log_mel_features(wav, eps=1e-12)).sum(axis=1)


@pytest.mark.parametrize("frame", [3, 50, 96])
def test_impulse_at_a_label_span_centre_peaks_in_that_frame(frame):
    # Label frame t covers samples [160 t, 160 t + 160); its feature window is centred on
    # 160 t + 80, so an impulse there gets the window's peak weight in frame t and equal,
    # smaller weights in the two neighbours.
    wav = np.zeros(SR, np.float32)
    wav[160 * frame + 80] = 1.0
    e = _energy(wav)
    assert e.argmax() == frame
    assert e[frame - 1] == pytest.approx(e[frame + 1], rel=1e-4)
    assert e[frame - 1] < 0.05 * e[frame]
    assert np.all(e[: frame - 1] < 1e-9) and np.all(e[frame + 2 :] < 1e-9)


def test_tone_burst_lights_up_its_frames_symmetrically():
    # A 1 kHz tone over label frames 50..59 (samples [8000, 9600)). The 400-sample windows of
    # frames 49..60 reach into it (frame t weights samples [160 t - 120, 160 t + 280)); frames
    # 51..58 hold it in full; the spill-over is the same on both sides.
    wav = np.zeros(SR, np.float32)
    t = np.arange(8000, 9600)
    wav[t] = 0.5 * np.sin(2 * np.pi * 1000 * t / SR)
    e = _energy(wav)
    lit = np.flatnonzero(e > 1e-9)
    assert lit.tolist() == list(range(49, 61))
    assert np.allclose(e[51:59], e[54], rtol=1e-3)
    assert e[49] == pytest.approx(e[60], rel=1e-3)
    assert e[50] == pytest.approx(e[59], rel=1e-3)
    assert e[49] < e[50] < e[51]
    # The tone's mel band dominates the lit frames.
    band = log_mel_features(wav)[55].argmax()
    assert band == log_mel_features(wav)[52].argmax()


def test_silence_sits_at_the_log_floor_and_inputs_may_be_tensors():
    np.testing.assert_allclose(log_mel_features(np.zeros(1600, np.float32), eps=1e-6),
                               np.log(1e-6), rtol=1e-6)
    wav = np.random.default_rng(0).normal(scale=0.1, size=3200).astype(np.float32)
    from_tensor = log_mel_features(torch.from_numpy(wav)[None])
    np.testing.assert_allclose(from_tensor, log_mel_features(wav), rtol=1e-6)
    assert from_tensor.dtype == np.float32


def test_mfcc_deltas_of_a_stationary_signal_are_small():
    rng = np.random.default_rng(1)
    t = np.arange(SR)
    wav = (0.3 * np.sin(2 * np.pi * 440 * t / SR) + 1e-3 * rng.normal(size=SR)).astype(np.float32)
    m = mfcc_features(wav)
    inner = m[5:-5]
    assert np.abs(inner[:, 13:]).mean() < 0.05 * np.abs(inner[:, :13]).mean()
    np.testing.assert_allclose(mfcc_features(wav, deltas=False), m[:, :13], rtol=1e-5, atol=1e-5)


def test_invalid_inputs_are_rejected():
    with pytest.raises(ValueError, match="mono waveform"):
        log_mel_features(np.zeros((2, 1600), np.float32))
    with pytest.raises(ValueError, match="floating-point"):
        log_mel_features(np.zeros(1600, np.int16))
    with pytest.raises(ValueError, match="n_fft=511"):
        log_mel_features(np.zeros(1600, np.float32), n_fft=511)
    with pytest.raises(ValueError, match="n_mfcc"):
        mfcc_features(np.zeros(1600, np.float32), n_mfcc=41)
    with pytest.raises(ValueError, match="unknown baseline feature kind 'fbank'"):
        baseline_features({"u": np.zeros(1600, np.float32)}, kind="fbank")


def test_baseline_features_over_utterances():
    audio = {"a": np.zeros(1600, np.float32), "b": np.zeros(3300, np.float32)}
    out = baseline_features(audio, kind="mfcc", n_mfcc=10)
    assert {u: f.shape for u, f in out.items()} == {"a": (10, 30), "b": (20, 30)}
