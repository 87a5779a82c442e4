"""Audio reading: headers, partial reads, mono mixing, resampling, bad files, real speech."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
import torchaudio.functional as AF

from ssl_speech.data.audio import (
    SAMPLE_RATE,
    AudioError,
    audio_info,
    read_audio,
    resampled_length,
)


def test_info_from_header(tmp_path, audio_file):
    path = audio_file(tmp_path / "a.flac", 12345, sr=22050, channels=2)
    info = audio_info(path)
    assert (info.path, info.num_samples, info.sample_rate, info.channels) == (path, 12345, 22050, 2)
    assert info.num_samples_at(SAMPLE_RATE) == len(AF.resample(torch.zeros(12345), 22050, 16000))


@pytest.mark.parametrize("orig", [8000, 11025, 22050, 44100, 48000])
@pytest.mark.parametrize("n", [1, 999, 44100])
def test_resampled_length_matches_torchaudio(orig, n):
    assert resampled_length(n, orig, 16000) == AF.resample(torch.zeros(n), orig, 16000).shape[0]


@pytest.mark.parametrize("ext", [".flac", ".wav"])
def test_full_and_partial_reads_at_16k(tmp_path, audio_file, ext):
    path = audio_file(tmp_path / f"a{ext}", 20000)
    reference, _ = sf.read(path, dtype="float32")
    full = read_audio(path)
    assert full.dtype == np.float32 and full.shape == (20000,)
    np.testing.assert_array_equal(full, reference)
    np.testing.assert_array_equal(read_audio(path, 1234, 5000), reference[1234:6234])
    np.testing.assert_array_equal(read_audio(path, 15000), reference[15000:])


def test_stereo_is_mixed_to_mono(tmp_path, audio_file):
    path = audio_file(tmp_path / "st.wav", 8000, channels=2)  # right channel = 0.7 * left
    both, _ = sf.read(path, dtype="float32")
    np.testing.assert_allclose(read_audio(path), both.mean(axis=1), atol=1e-7)
    np.testing.assert_allclose(read_audio(path), 0.85 * both[:, 0], atol=1e-4)


@pytest.mark.parametrize("orig", [8000, 44100, 48000])
def test_partial_resampled_reads_equal_slices_of_the_whole(tmp_path, audio_file, orig):
    path = audio_file(tmp_path / "r.flac", orig * 2, sr=orig, channels=2)
    whole = read_audio(path)
    assert whole.shape == (32000,)
    for start, n in [(0, 1000), (160, 2048), (12345, 4000), (32000 - 777, 777), (0, 32000)]:
        part = read_audio(path, start, n)
        assert part.shape == (n,)
        np.testing.assert_allclose(part, whole[start : start + n], atol=2e-6)


def test_resampled_tone_keeps_frequency_and_level(tmp_path):
    path = tmp_path / "t.wav"
    t = np.arange(44100) / 44100
    sf.write(path, 0.5 * np.sin(2 * np.pi * 1000 * t), 44100, subtype="FLOAT")
    wav = read_audio(path)[1000:-1000]
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / len(wav)
    assert abs(peak_hz - 1000) < 2
    assert np.sqrt(np.mean(wav**2)) == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)


def test_request_outside_the_file_is_a_caller_error(tmp_path, audio_file):
    path = audio_file(tmp_path / "a.flac", 1000)
    with pytest.raises(ValueError, match=r"a\.flac.*\[900, 1100\).*1000 samples"):
        read_audio(path, 900, 200)
    with pytest.raises(ValueError, match="target_sr"):
        read_audio(path, target_sr=0)


def test_a_file_whose_length_changed_since_the_scan_is_named(tmp_path, audio_file):
    path = audio_file(tmp_path / "a.flac", 1000)
    assert len(read_audio(path, 0, 100, expected_total=1000)) == 100
    with pytest.raises(AudioError, match=r"a\.flac: changed since the corpus scan: 1000 samples"):
        read_audio(path, 0, 100, expected_total=1200)


# ----------------------------------------------------------------------------- bad files
def _truncated_flac(tmp_path, audio_file) -> Path:
    path = audio_file(tmp_path / "cut.flac", 48000, seed=3)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_truncated_flac_is_caught_by_the_end_check_and_at_read_time(tmp_path, audio_file):
    path = _truncated_flac(tmp_path, audio_file)
    assert audio_info(path).num_samples == 48000  # the header still promises everything
    with pytest.raises(AudioError, match=r"cut\.flac: truncated or corrupt.*48000 samples"):
        audio_info(path, check_end=True)
    with pytest.raises(AudioError, match=r"cut\.flac: truncated"):
        read_audio(path, 40000, 8000)
    assert read_audio(path, 0, 1000).shape == (1000,)  # the intact head still reads


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda p: p.with_suffix(".flac").write_bytes(b""), r"empty file \(0 bytes\)"),
        (lambda p: p.with_suffix(".flac").write_bytes(os.urandom(2000)), "not readable"),
        (lambda p: sf.write(p.with_suffix(".wav"), np.zeros(0), 16000), "contains no samples"),
        (lambda p: p.with_suffix(".mp4").write_bytes(b"\0" * 100), "unknown audio extension"),
        (lambda p: None, "no such file"),
    ],
    ids=["empty", "garbage", "zero-samples", "extension", "missing"],
)
def test_bad_files_raise_audio_error_naming_the_file(tmp_path, make, pattern):
    make(tmp_path / "bad")
    path = next(tmp_path.glob("bad.*"), tmp_path / "bad.flac")
    for call in (audio_info, read_audio):
        with pytest.raises(AudioError, match=pattern) as info:
            call(path)
        assert str(path) in str(info.value)
        assert isinstance(info.value, ValueError)


# ----------------------------------------------------------------------------- real speech
def _log_mel(wav: np.ndarray) -> torch.Tensor:
    mel = torchaudio.transforms.MelSpectrogram(SAMPLE_RATE, n_fft=400, hop_length=160, n_mels=80)
    return torch.log(mel(torch.from_numpy(wav)) + 1e-10)


def _voiced(wav: np.ndarray) -> np.ndarray:
    """Per 10 ms frame: normalised autocorrelation peak above 0.5 at 60-400 Hz lags."""
    frames = torch.from_numpy(wav).unfold(0, 640, 160)
    frames = frames - frames.mean(1, keepdim=True)
    ac = torch.fft.irfft(torch.fft.rfft(frames, n=1280).abs() ** 2)[:, :640]
    ac = ac / ac[:, :1].clamp_min(1e-9)
    loud = (frames**2).mean(1) > (frames**2).mean(1).max() * 1e-4
    return ((ac[:, 40:267].max(1).values > 0.5) & loud).numpy()


def test_real_recordings_read_at_16k(real_dir):
    lv = read_audio(real_dir / "librivox_0880.flac")
    arctic = read_audio(real_dir / "arctic_a0009.wav")
    assert lv.shape == (47840,) and arctic.shape == (audio_info(real_dir / "arctic_a0009.wav")
                                                     .num_samples,)
    for wav in (lv, arctic):
        assert wav.dtype == np.float32 and np.abs(wav).max() < 1.0 and wav.std() > 0.01


def test_real_44k_stereo_resamples_to_the_original(real_dir):
    """The derived 44.1 kHz stereo file mixes and resamples back to 0.75 x the original."""
    original = read_audio(real_dir / "librivox_0880.flac")
    info = audio_info(real_dir / "librivox_0880_44k_stereo.flac")
    assert (info.sample_rate, info.channels) == (44100, 2)
    back = read_audio(info.path)
    assert back.shape == original.shape
    error = back - 0.75 * original
    snr_db = 10 * np.log10(np.sum((0.75 * original) ** 2) / np.sum(error**2))
    assert snr_db > 35
    # Energy per band is kept (ratio 0.75^2) below the resampler's roll-off.
    freqs = np.fft.rfftfreq(len(original), 1 / SAMPLE_RATE)
    p_orig, p_back = (np.abs(np.fft.rfft(w)) ** 2 for w in (original, back))
    for lo, hi in [(0, 500), (500, 1000), (1000, 2000), (2000, 4000), (4000, 7000)]:
        band = (freqs >= lo) & (freqs < hi)
        assert p_back[band].sum() / p_orig[band].sum() == pytest.approx(0.5625, rel=0.03)
    # A partial read of the resampled file matches the whole-file read.
    np.testing.assert_allclose(read_audio(info.path, 16000, 20480), back[16000:36480], atol=2e-6)


@pytest.mark.parametrize("name", ["librivox_0880.flac", "arctic_a0009.wav",
                                  "librivox_0880_44k_stereo.flac"])
def test_log_mel_of_real_speech_is_speech_like(real_dir, name):
    wav = read_audio(real_dir / name)
    log_mel = _log_mel(wav)
    assert log_mel.shape == (80, len(wav) // 160 + 1)
    assert torch.isfinite(log_mel).all()
    frame_db = 10 * torch.log10(log_mel.exp().sum(0))
    assert frame_db.max() - frame_db.min() > 30  # pauses and speech: energy varies over time
    assert log_mel[:20].mean() > log_mel[60:].mean()  # speech energy sits in low mel bands
    voiced = _voiced(wav).mean()
    assert 0.3 < voiced < 0.9  # voiced frames exist, and so do unvoiced/silent ones


def _arctic_phones(path: Path) -> list[tuple[float, float, str]]:
    """(onset s, offset s, phone) from an HTS full-context label (times in 100 ns)."""
    out = []
    for line in path.read_text().splitlines():
        start, end, label = line.split()
        phone = re.match(r"^[^-]*-([^+]+)\+", label).group(1)
        out.append((int(start) * 1e-7, int(end) * 1e-7, phone))
    return out


def test_arctic_phone_boundaries_fall_inside_the_audio(real_dir):
    wav = read_audio(real_dir / "arctic_a0009.wav")
    phones = _arctic_phones(real_dir / "arctic_a0009_phone.lab")
    seconds = len(wav) / SAMPLE_RATE
    assert phones[0][0] == 0 and phones[-1][1] <= seconds
    assert all(a[1] == b[0] for a, b in zip(phones, phones[1:]))  # contiguous
    assert all(on < off for on, off, _ in phones)
    assert [p for *_, p in phones][:5] == ["sil", "hh", "iy", "t", "er"]
    # The labels agree with the signal: silences are quiet, vowels are voiced.
    voiced = _voiced(wav)
    energy = 10 * np.log10(np.array([np.mean(wav[i * 160 : i * 160 + 640] ** 2) + 1e-12
                                     for i in range(len(voiced))]))

    def frames(kind: set[str]) -> np.ndarray:
        idx = [i for on, off, p in phones if p in kind
               for i in range(int(on * 100), min(int(off * 100) - 3, len(voiced)))]
        return np.array(idx)

    sil, vowels = frames({"sil"}), frames({"iy", "er", "aa", "ae", "ey", "eh", "ax", "ao"})
    assert energy[vowels].mean() - energy[sil].mean() > 20
    assert voiced[vowels].mean() > 0.7 > voiced[sil].mean()
