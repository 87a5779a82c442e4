"""Spectral baseline features (log-mel, MFCC) at 10 ms, frame-aligned with the phone labels.

Every probe reports these beside the model, so they follow the label convention exactly:
label frame ``t`` covers samples ``[160 t, 160 t + 160)`` at 16 kHz, and feature frame ``t`` is
the 25 ms window *centred on that span*, i.e. on sample ``160 t + 80``. To get there the STFT
runs with ``center=False`` on a waveform padded by ``(n_fft - hop) / 2`` samples on each side
(reflection padding, so the edge frames see mirrored audio rather than artificial silence).
With the defaults (``n_fft=512``, ``hop=160``) that is 176 samples; the 400-sample Hann window
sits in the middle of each 512-sample frame, so frame ``t`` weights samples
``[160 t - 120, 160 t + 280)``. The number of frames is then exactly ``num_samples // hop``,
the same count as the labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import numpy as np
import torch
import torchaudio
from torch import Tensor

from ssl_speech.data.audio import SAMPLE_RATE

HOP = 160  # samples per 10 ms frame at 16 kHz
WIN = 400  # samples per 25 ms window at 16 kHz


@lru_cache(maxsize=8)
def _mel_transform(
    sample_rate: int, n_fft: int, win_length: int, hop_length: int, n_mels: int,
    f_min: float, f_max: float | None,
) -> torchaudio.transforms.MelSpectrogram:
    # Building the filterbank costs more than a short utterance's STFT: build it once per setting.
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate, n_fft=n_fft, win_length=win_length, hop_length=hop_length,
        f_min=f_min, f_max=f_max, n_mels=n_mels, center=False, power=2.0,
    )


def _as_waveform(wav: np.ndarray | Tensor) -> Tensor:
    """A ``(S,)`` float32 CPU tensor from a ``(S,)`` or ``(1, S)`` array or tensor."""
    x = torch.as_tensor(np.asarray(wav) if not isinstance(wav, Tensor) else wav)
    if x.dim() == 2 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 1:
        raise ValueError(
            f"expected a mono waveform of shape (samples,) or (1, samples), got {tuple(x.shape)}; "
            "mix multi-channel audio down to mono first"
        )
    if not torch.is_floating_point(x):
        raise ValueError(f"expected a floating-point waveform in [-1, 1], got dtype {x.dtype}")
    return x.detach().to(device="cpu", dtype=torch.float32)


def log_mel_features(
    wav: np.ndarray | Tensor,
    n_mels: int = 40,
    *,
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = 512,
    win_length: int = WIN,
    hop_length: int = HOP,
    f_min: float = 0.0,
    f_max: float | None = None,
    eps: float = 1e-6,
) -> np.ndarray:
    """Log mel filterbank energies, one frame per ``hop_length`` samples.

    Args:
        wav: ``(S,)`` or ``(1, S)`` float waveform at ``sample_rate``.
        n_mels: number of mel bands.
        n_fft: FFT size in samples (``>= win_length``; ``n_fft - hop_length`` must be even).
        win_length: Hann window length in samples (25 ms at 16 kHz).
        hop_length: frame step in samples (10 ms at 16 kHz).
        eps: added to the power before the log (the floor for digital silence).

    Returns:
        ``(S // hop_length, n_mels)`` float32; frame ``t`` is centred on sample
        ``hop_length * t + hop_length / 2`` (see the module docstring).
    """
    if n_mels < 1:
        raise ValueError(f"n_mels must be >= 1, got {n_mels}")
    if hop_length < 1 or win_length < hop_length:
        raise ValueError(
            f"need 1 <= hop_length <= win_length, got hop_length={hop_length}, "
            f"win_length={win_length}"
        )
    if n_fft < win_length or (n_fft - hop_length) % 2:
        raise ValueError(
            f"n_fft={n_fft} must be >= win_length={win_length} and n_fft - hop_length must be "
            f"even (hop_length={hop_length}) so the frames centre exactly on the label spans"
        )
    if eps <= 0:
        raise ValueError(f"eps must be > 0 (it floors the log), got {eps}")
    x = _as_waveform(wav)
    num_frames = x.shape[0] // hop_length
    if num_frames == 0:
        return np.zeros((0, n_mels), dtype=np.float32)
    pad = (n_fft - hop_length) // 2
    # Reflection needs more samples than the pad; a shorter clip is padded with zeros.
    mode = "reflect" if x.shape[0] > pad else "constant"
    x = torch.nn.functional.pad(x[None, None], (pad, pad), mode=mode)[0, 0]
    mel = _mel_transform(sample_rate, n_fft, win_length, hop_length, n_mels, f_min, f_max)
    with torch.no_grad():
        power = mel(x)  # (n_mels, frames)
    if power.shape[1] != num_frames:  # the padding arithmetic above guarantees equality
        raise RuntimeError(f"expected {num_frames} frames, the transform gave {power.shape[1]}")
    return torch.log(power + eps).T.contiguous().numpy()


def mfcc_features(
    wav: np.ndarray | Tensor,
    n_mfcc: int = 13,
    deltas: bool = True,
    *,
    n_mels: int = 40,
    delta_window: int = 5,
    **log_mel_kwargs: object,
) -> np.ndarray:
    """MFCCs (orthonormal DCT-II of the log-mel energies), with first and second deltas.

    Args:
        wav: ``(S,)`` or ``(1, S)`` float waveform at 16 kHz.
        n_mfcc: cepstral coefficients kept (``<= n_mels``), c0 included.
        deltas: append delta and delta-delta coefficients (torchaudio ``compute_deltas``).
        n_mels: mel bands of the underlying filterbank.
        delta_window: frames in the regression window of the deltas (odd, ``>= 3``).
        log_mel_kwargs: passed on to :func:`log_mel_features` (``n_fft``, ``eps``, ...).

    Returns:
        ``(S // 160, n_mfcc)`` or, with deltas, ``(S // 160, 3 n_mfcc)`` float32, frame-aligned
        exactly as :func:`log_mel_features`.
    """
    if not 1 <= n_mfcc <= n_mels:
        raise ValueError(f"n_mfcc must be in [1, n_mels={n_mels}], got {n_mfcc}")
    if delta_window < 3 or delta_window % 2 == 0:
        raise ValueError(f"delta_window must be odd and >= 3, got {delta_window}")
    log_mel = torch.from_numpy(log_mel_features(wav, n_mels, **log_mel_kwargs))  # (T, n_mels)
    dct = torchaudio.functional.create_dct(n_mfcc, n_mels, norm="ortho")  # (n_mels, n_mfcc)
    cep = (log_mel @ dct).T  # (n_mfcc, T)
    if deltas:
        if cep.shape[1] == 0:
            cep = cep.new_zeros(3 * n_mfcc, 0)
        else:
            d1 = torchaudio.functional.compute_deltas(cep, win_length=delta_window)
            d2 = torchaudio.functional.compute_deltas(d1, win_length=delta_window)
            cep = torch.cat([cep, d1, d2], dim=0)
    return cep.T.contiguous().numpy().astype(np.float32, copy=False)


_KINDS = {"log_mel": log_mel_features, "mfcc": mfcc_features}


def baseline_features(
    audio: Mapping[str, np.ndarray | Tensor], kind: str = "log_mel", **kwargs: object
) -> dict[str, np.ndarray]:
    """Baseline features for a set of utterances: ``{utt: (S // 160, C)}``.

    Args:
        audio: ``{utt: (S,) waveform at 16 kHz}``.
        kind: ``"log_mel"`` or ``"mfcc"``.
        kwargs: passed to :func:`log_mel_features` or :func:`mfcc_features`.
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown baseline feature kind {kind!r}; choose one of {sorted(_KINDS)}")
    fn = _KINDS[kind]
    return {utt: fn(wav, **kwargs) for utt, wav in audio.items()}
