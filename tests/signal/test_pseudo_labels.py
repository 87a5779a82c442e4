"""Frame-level pseudo-labels: shapes, units, undefined frames, the registry and bad input.

The pitch tracker behind ``f0``, ``voicing`` and ``hnr`` is tested in test_pitch.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ssl_speech.signal.baseline_features import log_mel_features, mfcc_features
from ssl_speech.signal.pitch import pitch_track
from ssl_speech.signal.pseudo_labels import (
    PSEUDO_LABELS,
    extract_pseudo_label,
    extract_pseudo_labels,
)

SR = 16000
BUILT_IN = [name for name in PSEUDO_LABELS if PSEUDO_LABELS[name].requires is None]


@pytest.mark.parametrize("hop", [160, 320])


def test_every_extractor_gives_one_value_per_frame(hop, harmonic, white_noise):
    x = white_noise(0.5) + harmonic(150.0, 0.5)
    single = extract_pseudo_labels(BUILT_IN, x, hop=hop)
    batch = extract_pseudo_labels(BUILT_IN, torch.stack([x, 0.5 * x]), hop=hop)
    channel = extract_pseudo_labels(BUILT_IN, torch.stack([x, 0.5 * x])[:, None], hop=hop)
    T = x.shape[0] // hop
    for name in BUILT_IN:
        dims = PSEUDO_LABELS[name].dims
        expected = (T,) if dims == 1 else (T, dims)
        assert single[name].shape == expected, name
        assert batch[name].shape == (2, *expected), name
        assert torch.equal(batch[name], channel[name]), name
        assert single[name].dtype == torch.float32


def test_batch_rows_equal_single_waveforms(harmonic, white_noise):
    rows = torch.stack([harmonic(120.0, 0.4, noise=0.01), white_noise(0.4, seed=3)])
    batch = extract_pseudo_labels(BUILT_IN, rows)
    for b in range(2):
        alone = extract_pseudo_labels(BUILT_IN, rows[b])
        for name in BUILT_IN:
            torch.testing.assert_close(batch[name][b], alone[name], equal_nan=True,
                                       rtol=1e-4, atol=1e-4, msg=name)


def test_frame_count_follows_the_label_convention():
    for samples in (159, 160, 161, 16000, 16159):
        out = extract_pseudo_labels(["rms", "f0", "log_mel"], torch.randn(samples) * 0.1)
        assert out["rms"].shape == (samples // 160,)
        assert out["f0"].shape == (samples // 160,)
        assert out["log_mel"].shape == (samples // 160, 40)


def test_energy_appears_in_the_frame_of_its_span():
    x = torch.zeros(16000)
    x[160 * 50 : 160 * 51] = 0.5 * torch.randn(160, generator=torch.Generator().manual_seed(0))
    rms = extract_pseudo_label("rms", x)
    assert int(rms.argmax()) == 50
    zcr = extract_pseudo_label("zcr", x)
    assert zcr[:45].eq(0).all() and zcr[50] > 0


def test_log_mel_and_mfcc_are_the_baseline_features(harmonic, white_noise):
    x = white_noise(0.7, seed=1) + harmonic(200.0, 0.7)
    out = extract_pseudo_labels(["log_mel", "mfcc"], x)
    np.testing.assert_allclose(out["log_mel"].numpy(), log_mel_features(x), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out["mfcc"].numpy(), mfcc_features(x, deltas=False),
                               rtol=1e-5, atol=1e-4)


def test_level_units_of_a_full_scale_sine():
    t = torch.arange(SR) / SR
    sine = torch.sin(2 * math.pi * 997.0 * t)
    out = extract_pseudo_labels(["rms", "loudness"], sine)
    # dBFS of a sine of amplitude 1: 20 log10(1 / sqrt 2); BS.1770 defines -3.01 LKFS for it
    assert out["rms"][5:-5].mean().item() == pytest.approx(-3.01, abs=0.05)
    assert out["loudness"][5:-5].mean().item() == pytest.approx(-3.01, abs=0.3)
    half = extract_pseudo_label("rms", 0.5 * sine)
    assert (out["rms"] - half)[5:-5].mean().item() == pytest.approx(6.02, abs=0.01)


def test_loudness_weights_high_frequencies_above_low_ones():
    t = torch.arange(SR) / SR
    low = extract_pseudo_label("loudness", 0.5 * torch.sin(2 * math.pi * 60.0 * t))
    high = extract_pseudo_label("loudness", 0.5 * torch.sin(2 * math.pi * 4000.0 * t))
    rms_low = extract_pseudo_label("rms", 0.5 * torch.sin(2 * math.pi * 60.0 * t))
    rms_high = extract_pseudo_label("rms", 0.5 * torch.sin(2 * math.pi * 4000.0 * t))
    # same RMS level, but the K-weighting cuts 60 Hz and lifts 4 kHz
    assert (rms_low - rms_high)[10:-10].abs().max() < 0.2
    assert (high - low)[10:-10].mean() > 3.0


@pytest.mark.parametrize("freq", [440.0, 1000.0, 3000.0])


def test_spectral_descriptors_of_a_sine(freq):
    t = torch.arange(SR) / SR
    out = extract_pseudo_labels(["spectral_centroid", "spectral_rolloff", "spectral_flatness",
                                 "zcr"], 0.5 * torch.sin(2 * math.pi * freq * t))
    inner = slice(5, -5)
    assert out["spectral_centroid"][inner].mean().item() == pytest.approx(freq, rel=0.02)
    assert abs(out["spectral_rolloff"][inner].mean().item() - freq) <= 2 * SR / 512
    assert out["spectral_flatness"][inner].max() < -30.0  # a line, far from flat
    assert out["zcr"][inner].mean().item() == pytest.approx(2 * freq, rel=0.03)


def test_spectral_flatness_of_white_noise(white_noise):
    flatness = extract_pseudo_label("spectral_flatness", white_noise(2.0))
    # periodogram bins of white noise are exponential: geometric / arithmetic mean = e^-gamma
    expected = 10 * math.log10(math.exp(-0.5772))
    assert flatness.mean().item() == pytest.approx(expected, abs=0.3)
    centroid = extract_pseudo_label("spectral_centroid", white_noise(2.0))
    assert centroid.mean().item() == pytest.approx(SR / 4, rel=0.03)


def test_undefined_values_in_digital_silence():
    out = extract_pseudo_labels(BUILT_IN, torch.zeros(8000))
    for name in ("f0", "voicing", "hnr", "spectral_centroid", "spectral_flatness",
                 "spectral_rolloff"):
        assert out[name].isnan().all(), name
    # levels have a floor instead: silence is quiet, not undefined
    assert out["rms"].eq(-100.0).all()
    assert out["zcr"].eq(0.0).all()
    assert out["log_mel"].isfinite().all() and out["mfcc"].isfinite().all()


def test_f0_is_undefined_in_noise_and_silence_and_hnr_with_it(harmonic, white_noise):
    x = torch.cat([harmonic(150.0, 0.5), torch.zeros(8000), white_noise(0.5, 0.05)])
    out = extract_pseudo_labels(["f0", "hnr", "voicing"], x)
    voiced, silent, noisy = slice(5, 45), slice(55, 95), slice(105, 145)
    assert out["f0"][voiced].isfinite().all() and out["hnr"][voiced].isfinite().all()
    assert out["f0"][silent].isnan().all() and out["f0"][noisy].isnan().all()
    assert out["hnr"][noisy].isnan().all()
    assert out["hnr"][voiced].min() > 10.0  # dB, a clean periodic signal
    assert out["voicing"][voiced].min() > 0.9 and out["voicing"][noisy].max() < 0.6


def test_hnr_falls_with_added_noise(harmonic):
    clean = extract_pseudo_label("hnr", harmonic(150.0, noise=0.003)).nanmedian()
    noisy = extract_pseudo_label("hnr", harmonic(150.0, noise=0.1)).nanmedian()
    assert clean > noisy + 6.0


def test_torchaudio_pitch_is_on_the_frame_grid(harmonic):
    x = torch.cat([harmonic(150.0, 0.5, harmonics=5), harmonic(250.0, 0.5, harmonics=5)])
    f0 = extract_pseudo_label("f0_torchaudio", x)
    assert f0.shape == (100,)
    assert f0[10:40].median().item() == pytest.approx(150.0, rel=0.03)
    assert f0[60:].median().item() == pytest.approx(250.0, rel=0.03)
    change = int(torch.nonzero(f0 > 200.0)[0])
    assert abs(change - 50) <= 2  # the step at 0.5 s stays at frame 50
    assert extract_pseudo_label("f0_torchaudio", torch.zeros(1600)).isnan().all()


def test_unknown_names_and_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="unknown pseudo-label"):
        extract_pseudo_labels(["pitch"], torch.zeros(1600))
    with pytest.raises(ValueError, match="mono"):
        extract_pseudo_label("rms", torch.zeros(2, 2, 1600))
    with pytest.raises(ValueError, match="floating-point"):
        extract_pseudo_label("rms", torch.zeros(1600, dtype=torch.int16))
    with pytest.raises(ValueError, match="hop"):
        extract_pseudo_label("rms", torch.zeros(1600), hop=161)
    with pytest.raises(ValueError, match="f_min"):
        pitch_track(torch.zeros(1600), f_min=500.0, f_max=100.0)


def test_the_noise_control_is_white_noise_fixed_by_the_audio(white_noise):
    x = white_noise(2.0, seed=1)
    a, b = extract_pseudo_label("noise", x), extract_pseudo_label("noise", x.clone())
    assert torch.equal(a, b)  # the same audio, the same values
    other = extract_pseudo_label("noise", white_noise(2.0, seed=2))
    assert not torch.equal(a, other)
    assert abs(a.mean().item()) < 0.2 and abs(a.std().item() - 1.0) < 0.15
    # independent of the signal's level and shape: a loud tone gets the same statistics
    tone = extract_pseudo_label("noise", 0.9 * torch.sin(torch.arange(32000) * 0.1))
    assert abs(tone.mean().item()) < 0.2 and abs(tone.std().item() - 1.0) < 0.15
    assert abs(np.corrcoef(a.numpy(), extract_pseudo_label("rms", x).numpy())[0, 1]) < 0.2
