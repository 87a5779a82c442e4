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
========================  ====  =================================================================

The spectral descriptors all come from one short-time power spectrum, the very STFT of the
log-mel baseline (512-point FFT, 25 ms Hann window, the filterbank shared with it), so
``log_mel`` equals :func:`~ssl_speech.signal.baseline_features.log_mel_features` frame for frame.

The F0 tracker (:func:`pitch_track`) takes its period candidates from YIN's cumulative-mean
normalised difference function (de Cheveigné and Kawahara, 2002) and chooses among them, and
between voiced and unvoiced, with a Viterbi path that penalises octave jumps and voicing
changes (the idea of Praat's path finder, Boersma 1993). On the embedded corpus, whose true F0
is known, it makes fewer gross errors than Praat's autocorrelation method and far fewer than
torchaudio's ``detect_pitch_frequency`` (figures in the tests' docstrings).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import torch
import torchaudio
from torch import Tensor

from ssl_speech.data.audio import SAMPLE_RATE
from ssl_speech.signal.baseline_features import HOP, WIN, _mel_transform
from ssl_speech.signal.single_thread import single_thread

N_FFT = 512  # the log-mel baseline's FFT size
N_MELS = 40
N_MFCC = 13
F0_MIN = 50.0  # Hz: below every voice of the embedded corpus and most adult speech
F0_MAX = 500.0  # Hz
# Pitch tracker costs, tuned on the embedded corpus against its true F0 (see the tests).
NUM_CANDIDATES = 4  # period candidates per frame
OCTAVE_COST = 0.03  # per octave below F0_MAX
JUMP_COST = 1.0  # per octave of F0 change between frames
UNVOICED_COST = 0.55  # cost of the unvoiced state (a candidate's cost is its aperiodicity)
SWITCH_COST = 0.3  # per voicing change
SILENCE_DB = 45.0  # frames this far below the loudest frame are unvoiced
TORCHAUDIO_MEDIAN = 30  # frames of detect_pitch_frequency's median filter (its default)
ROLLOFF = 0.85
POWER_FLOOR = 1e-10  # mean-square power below which a frame counts as digital silence
K_WEIGHTING_IR = 4096  # samples of the K-weighting impulse response used for its magnitude


# --------------------------------------------------------------------------------------------
# Input and framing
# --------------------------------------------------------------------------------------------


def _as_batch(wav: Tensor | np.ndarray) -> tuple[Tensor, bool]:
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


def _check_hop(hop: int) -> None:
    if hop < 2 or hop % 2:
        raise ValueError(f"hop must be an even number of samples >= 2 (160 for 10 ms), got {hop}")


def frames(x: Tensor, hop: int, length: int, left: int | None = None) -> Tensor:
    """Analysis frames ``(B, T, length)`` of ``x`` ``(B, S)``, ``T = S // hop``.

    Frame ``t`` holds samples ``[c - left, c - left + length)`` with ``c = hop t + hop // 2`` the
    centre of the frame's span (``left`` defaults to ``length // 2``: a centred window). The
    signal is extended by reflection where the frames reach past its ends.
    """
    _check_hop(hop)
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


def _finish(value: Tensor, single: bool) -> Tensor:
    return value[0] if single else value


# --------------------------------------------------------------------------------------------
# Short-time power spectrum (shared with the log-mel baseline)
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _mel_on(device: str) -> torchaudio.transforms.MelSpectrogram:
    # The baseline's transform, cached per device (the CPU one is the baseline's own object).
    mel = _mel_transform(SAMPLE_RATE, N_FFT, WIN, HOP, N_MELS, 0.0, None)
    return mel if device == "cpu" else copy.deepcopy(mel).to(device)


def _power_spectrum(x: Tensor, hop: int) -> Tensor:
    """``(B, T, N_FFT // 2 + 1)`` power of 25 ms Hann frames centred on each frame's span."""
    _check_hop(hop)
    if hop > N_FFT:
        raise ValueError(f"hop {hop} is longer than the {N_FFT}-sample FFT frame; use hop <= 512")
    B, S = x.shape
    T = S // hop
    if T == 0:
        return x.new_zeros(B, 0, N_FFT // 2 + 1)
    pad = (N_FFT - hop) // 2
    mode = "reflect" if pad < S else "constant"
    padded = torch.nn.functional.pad(x[:, None], (pad, pad), mode=mode)[:, 0]
    spectrogram = _mel_on(str(x.device)).spectrogram
    # The baseline's STFT (hop 160) at any hop: same window and FFT, frames every `hop` samples.
    power = torch.stft(
        padded, N_FFT, hop_length=hop, win_length=WIN, window=spectrogram.window,
        center=False, return_complex=True,
    ).abs().pow(2)
    return power[..., :T].transpose(1, 2)


@lru_cache(maxsize=8)
def _k_weighting_gain(device: str) -> Tensor:
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


class _Analysis:
    """Shared intermediate results of one batch, computed on first use."""

    def __init__(self, wav: Tensor | np.ndarray, hop: int) -> None:
        _check_hop(hop)
        self.x, self.single = _as_batch(wav)
        self.hop = hop

    @cached_property
    def power(self) -> Tensor:
        return _power_spectrum(self.x, self.hop)

    @cached_property
    def window_power(self) -> Tensor:
        """``(B, T)`` Hann-weighted mean square of each 25 ms frame (Parseval on ``power``)."""
        window = _mel_on(str(self.x.device)).spectrogram.window
        return _one_sided_sum(self.power) / (N_FFT * window.pow(2).sum())

    @cached_property
    def silent(self) -> Tensor:
        return self.window_power < POWER_FLOOR

    @cached_property
    def pitch(self) -> PitchTrack:
        return pitch_track(self.x, self.hop)


def _one_sided_sum(power: Tensor) -> Tensor:
    """Sum over the two-sided spectrum of a one-sided ``(..., N_FFT // 2 + 1)`` power."""
    return 2.0 * power.sum(-1) - power[..., 0] - power[..., -1]


# --------------------------------------------------------------------------------------------
# Pitch: YIN candidates, Viterbi path
# --------------------------------------------------------------------------------------------


@dataclass
class PitchTrack:
    """Per-frame pitch analysis of a batch, each ``(B, T)``.

    Attributes:
        f0: fundamental frequency in Hz, NaN where unvoiced.
        voiced: the voicing decision.
        aperiodicity: YIN's cumulative-mean normalised difference at the chosen lag (0 for a
            perfectly periodic frame, about 1 for noise); NaN in digital silence.
        periodicity: normalised autocorrelation at the chosen lag, clipped to [0, 1]; NaN in
            digital silence.
    """

    f0: Tensor
    voiced: Tensor
    aperiodicity: Tensor
    periodicity: Tensor


def _parabolic_vertex(left: Tensor, centre: Tensor, right: Tensor) -> tuple[Tensor, Tensor]:
    """Vertex of the parabola through ``(-1, left)``, ``(0, centre)``, ``(1, right)``: its
    abscissa in [-1, 1] and its value (``centre`` where the points are not convex)."""
    curvature = left - 2.0 * centre + right
    convex = curvature > 1e-12
    offset = (0.5 * (left - right) / curvature.clamp_min(1e-12)).clamp(-1.0, 1.0)
    value = centre - 0.25 * (left - right) * offset
    return (torch.where(convex, offset, torch.zeros_like(offset)),
            torch.where(convex, value.clamp_min(0.0), centre))


def _fast_size(n: int) -> int:
    """The smallest ``2^a 3^b 5^c >= n`` (FFTs of such sizes are fast)."""
    best = 1 << (n - 1).bit_length()
    for three in (1, 3, 9, 27):
        for five in (1, 5, 25):
            base = three * five
            if base <= best:
                size = base << max(0, (-(-n // base) - 1).bit_length())
                best = min(best, size)
    return best


def _difference_functions(x: Tensor, hop: int, window: int, lag_min: int, lag_max: int
                          ) -> tuple[Tensor, Tensor, Tensor]:
    """YIN's steps 1-3 for every frame: ``cmndf`` ``(B, T, lag_max + 2)`` (lag 0 first), the
    autocorrelation ``r`` and the energies ``e`` over the same lags."""
    length = window + lag_max + 1  # room for the lags up to lag_max + 1 (interpolation)
    # The compared samples span [start, start + window + lag): centre that span on the frame
    # for a mid-range lag (the geometric mean of the range), within a few ms for the others.
    typical = int(round(math.sqrt(lag_min * lag_max)))
    framed = frames(x, hop, length, left=(window + typical) // 2)
    framed = framed - framed.mean(-1, keepdim=True)  # a DC offset is not periodicity
    # r(tau) = sum_{j < W} x_j x_{j+tau}: one FFT correlation (no wrap-around: j + tau < length)
    n = _fast_size(length)
    head = torch.fft.rfft(framed[..., :window], n)
    r = torch.fft.irfft(head.conj() * torch.fft.rfft(framed, n), n)[..., : lag_max + 2]
    squares = torch.nn.functional.pad(framed.pow(2).cumsum(-1), (1, 0))
    lags = torch.arange(lag_max + 2, device=x.device)
    energy = squares[..., lags + window] - squares[..., lags]  # e(tau) = sum x_{tau..tau+W-1}^2
    diff = (energy[..., :1] + energy - 2.0 * r).clamp_min(0.0)
    cmndf = torch.ones_like(diff)
    cmndf[..., 1:] = diff[..., 1:] * lags[1:] / diff[..., 1:].cumsum(-1).clamp_min(1e-30)
    return cmndf, r, energy


def _viterbi(local: Tensor, log_f0: Tensor, jump_cost: float, switch_cost: float) -> Tensor:
    """Cheapest state path ``(B, T)`` through ``local`` costs ``(B, T, K + 1)``.

    States ``0 … K-1`` are the frame's period candidates (log2 frequency ``log_f0``
    ``(B, T, K)``), state ``K`` is unvoiced. Moving between candidates costs ``jump_cost`` per
    octave; switching between voiced and unvoiced costs ``switch_cost``.
    """
    with single_thread(local.device):
        return _viterbi_path(local, log_f0, jump_cost, switch_cost)


def _viterbi_path(local: Tensor, log_f0: Tensor, jump_cost: float, switch_cost: float) -> Tensor:
    B, T, S = local.shape
    K = S - 1
    switch = local.new_full((B, S, S), switch_cost)
    switch[:, K, K] = 0.0
    score = local[:, 0]
    back = torch.zeros(B, T, S, dtype=torch.long, device=local.device)
    for t in range(1, T):  # a short loop over frames, vectorised over batch and states
        transition = switch.clone()
        jumps = (log_f0[:, t - 1, :, None] - log_f0[:, t, None, :]).abs()
        transition[:, :K, :K] = jump_cost * jumps.nan_to_num(0.0)
        best, back[:, t] = (score[:, :, None] + transition).min(1)
        score = best + local[:, t]
    path = torch.empty(B, T, dtype=torch.long, device=local.device)
    if T == 0:
        return path
    path[:, -1] = score.argmin(-1)
    for t in range(T - 1, 0, -1):
        path[:, t - 1] = back[:, t].gather(-1, path[:, t, None])[:, 0]
    return path


def pitch_track(
    wav: Tensor | np.ndarray,
    hop: int = HOP,
    f_min: float = F0_MIN,
    f_max: float = F0_MAX,
    window: int = WIN,
    num_candidates: int = NUM_CANDIDATES,
    octave_cost: float = OCTAVE_COST,
    jump_cost: float = JUMP_COST,
    unvoiced_cost: float = UNVOICED_COST,
    switch_cost: float = SWITCH_COST,
    silence_db: float = SILENCE_DB,
) -> PitchTrack:
    """Pitch and voicing of ``(S,)`` or ``(B, S)`` audio at 16 kHz, one value per frame.

    YIN's cumulative-mean normalised difference ``d'`` (de Cheveigné and Kawahara, 2002) gives
    each frame's candidate periods: its ``num_candidates`` deepest local minima over the lags
    of ``[f_min, f_max]``, refined by parabolic interpolation. A candidate costs its ``d'`` plus
    ``octave_cost`` per octave below ``f_max`` (``d'`` favours multiples of the period; YIN's
    first-dip rule does the same job but fails on breathy or reverberant voices); being unvoiced
    costs ``unvoiced_cost``. A Viterbi path through the frames adds ``jump_cost`` per octave of
    F0 change and ``switch_cost`` per voicing change, as Praat's path finder does, which removes
    isolated octave errors. Frames more than ``silence_db`` below the loudest frame of their
    recording (row of the batch) are unvoiced.

    Returns:
        A :class:`PitchTrack` whose tensors are ``(B, T)``, or ``(T,)`` for an ``(S,)`` input.
    """
    if not 0 < f_min < f_max <= SAMPLE_RATE / 4:
        raise ValueError(f"need 0 < f_min < f_max <= 4000 Hz, got f_min={f_min}, f_max={f_max}")
    if num_candidates < 1 or window < 2:
        raise ValueError(
            f"need num_candidates >= 1 and window >= 2 samples, got {num_candidates}, {window}"
        )
    if min(octave_cost, jump_cost, unvoiced_cost, switch_cost, silence_db) < 0:
        raise ValueError("the pitch tracker's costs and silence_db must be >= 0")
    x, single = _as_batch(wav)
    if x.shape[1] // hop == 0:  # no frame: nothing to transform
        empty = x.new_zeros(x.shape[0], 0)
        track = PitchTrack(empty, empty.bool(), empty, empty)
        return PitchTrack(*(value[0] for value in vars(track).values())) if single else track
    lag_min = int(math.floor(SAMPLE_RATE / f_max))
    lag_max = int(math.ceil(SAMPLE_RATE / f_min))
    cmndf, r, energy = _difference_functions(x, hop, window, lag_min, lag_max)

    # Candidates: the cheapest local minima of d' within [lag_min, lag_max]. Between lags, a
    # period that is not a whole number of samples shows a shallower sampled dip than its
    # multiples do, so the candidates' periods and depths are interpolated before the path.
    around = cmndf[..., lag_min - 1 : lag_max + 2]
    centre = around[..., 1:-1]
    is_min = (centre <= around[..., :-2]) & (centre < around[..., 2:])
    octaves = torch.log2(torch.arange(lag_min, lag_max + 1, device=x.device) / lag_min)
    rough = torch.where(is_min, centre + octave_cost * octaves, torch.full_like(centre, math.inf))
    k = min(num_candidates, rough.shape[-1])
    rough, index = rough.topk(k, dim=-1, largest=False)  # (B, T, K), inf where fewer minima
    lag = index + lag_min
    offset, value = _parabolic_vertex(cmndf.gather(-1, lag - 1), cmndf.gather(-1, lag),
                                      cmndf.gather(-1, lag + 1))
    period = lag + offset
    cost = torch.where(rough.isfinite(), value + octave_cost * torch.log2(period / lag_min),
                       rough)
    log_f0 = torch.log2(SAMPLE_RATE / period)

    e0 = energy[..., 0]
    silent = e0 / window < POWER_FLOOR
    level = 10.0 * torch.log10(e0.clamp_min(1e-30))
    loud = ~silent
    if level.shape[-1]:
        loud &= level >= level.amax(-1, keepdim=True) - silence_db
    cost = torch.where(loud[..., None], cost, torch.full_like(cost, math.inf))
    local = torch.cat([cost, cost.new_full(cost.shape[:-1] + (1,), unvoiced_cost)], -1)
    state = _viterbi(local, log_f0, jump_cost, switch_cost)
    voiced = state < k
    # Unvoiced frames still report the periodicity of their best candidate.
    chosen = torch.where(voiced, state, cost.argmin(-1))[..., None]
    chosen_lag = lag.gather(-1, chosen)
    f0 = SAMPLE_RATE / period.gather(-1, chosen)[..., 0]
    aperiodicity = value.gather(-1, chosen)[..., 0]
    nccf = r.gather(-1, chosen_lag)[..., 0] / torch.sqrt(
        e0 * energy.gather(-1, chosen_lag)[..., 0]).clamp_min(1e-30)
    nan = torch.full_like(f0, math.nan)
    track = PitchTrack(
        f0=torch.where(voiced, f0, nan).float(),
        voiced=voiced,
        aperiodicity=torch.where(silent, nan, aperiodicity).float(),
        periodicity=torch.where(silent, nan, nccf.clamp(0.0, 1.0)).float(),
    )
    if single:
        track = PitchTrack(*(value[0] for value in vars(track).values()))
    return track


# --------------------------------------------------------------------------------------------
# The extractors
# --------------------------------------------------------------------------------------------


def _f0(a: _Analysis) -> Tensor:
    return a.pitch.f0


def _voicing(a: _Analysis) -> Tensor:
    return a.pitch.periodicity


def _hnr(a: _Analysis) -> Tensor:
    # Boersma (1993): HNR = 10 log10(r / (1 - r)) with r the normalised autocorrelation at the
    # period; r is clipped to [0.001, 0.999], i.e. HNR to about +-30 dB.
    r = a.pitch.periodicity.clamp(1e-3, 1.0 - 1e-3)
    hnr = 10.0 * torch.log10(r / (1.0 - r))
    return torch.where(a.pitch.voiced, hnr, torch.full_like(hnr, math.nan))


def _f0_torchaudio(a: _Analysis) -> Tensor:
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


def _loudness(a: _Analysis) -> Tensor:
    gain = _k_weighting_gain(str(a.x.device))
    window = _mel_on(str(a.x.device)).spectrogram.window
    weighted = _one_sided_sum(a.power * gain) / (N_FFT * window.pow(2).sum())
    return _level_db(weighted, offset=-0.691)  # BS.1770's offset: LKFS of a 997 Hz sine


def _rms(a: _Analysis) -> Tensor:
    return _level_db(a.window_power)


def _zcr(a: _Analysis) -> Tensor:
    framed = frames(a.x, a.hop, WIN)
    crossings = ((framed[..., 1:] * framed[..., :-1]) < 0).sum(-1).float()
    return crossings * SAMPLE_RATE / (WIN - 1)


def _frequencies(a: _Analysis) -> Tensor:
    return torch.arange(N_FFT // 2 + 1, device=a.x.device) * (SAMPLE_RATE / N_FFT)


def _undefined_in_silence(value: Tensor, a: _Analysis) -> Tensor:
    return torch.where(a.silent, torch.full_like(value, math.nan), value)


def _spectral_centroid(a: _Analysis) -> Tensor:
    p = a.power
    centroid = (p * _frequencies(a)).sum(-1) / p.sum(-1).clamp_min(1e-30)
    return _undefined_in_silence(centroid, a)


def _spectral_flatness(a: _Analysis) -> Tensor:
    p = a.power[..., 1:].clamp_min(1e-20)  # DC left out: an offset is not spectral shape
    flatness = 10.0 * (p.log().mean(-1) - p.mean(-1).log()) / math.log(10.0)
    return _undefined_in_silence(flatness, a)


def _spectral_rolloff(a: _Analysis) -> Tensor:
    p = a.power
    cumulative = p.cumsum(-1)
    reached = cumulative >= ROLLOFF * cumulative[..., -1:]
    rolloff = _frequencies(a)[reached.float().argmax(-1)]
    return _undefined_in_silence(rolloff, a)


def _log_mel(a: _Analysis) -> Tensor:
    fb = _mel_on(str(a.x.device)).mel_scale.fb  # (freq, n_mels)
    return torch.log(a.power @ fb + 1e-6)  # the baseline's eps


def _mfcc(a: _Analysis) -> Tensor:
    dct = torchaudio.functional.create_dct(N_MFCC, N_MELS, norm="ortho").to(a.x.device)
    return _log_mel(a) @ dct


def _f0_praat(a: _Analysis) -> Tensor:
    try:
        import parselmouth
    except ImportError as error:
        raise ImportError(
            "f0_praat needs the optional package praat-parselmouth (pip install "
            "praat-parselmouth); the built-in tracker is 'f0'"
        ) from error
    B, S = a.x.shape
    T = S // a.hop
    out = torch.full((B, T), math.nan)
    centres = (np.arange(T) * a.hop + a.hop / 2) / SAMPLE_RATE
    for b, row in enumerate(a.x.cpu().double().numpy()):
        pitch = parselmouth.Sound(row, SAMPLE_RATE).to_pitch_ac(
            time_step=a.hop / SAMPLE_RATE, pitch_floor=F0_MIN, pitch_ceiling=F0_MAX)
        values = np.array([pitch.get_value_at_time(t) for t in centres], dtype=np.float64)
        out[b] = torch.from_numpy(values).float()  # Praat gives NaN where unvoiced
    return out.to(a.x.device)


@dataclass(frozen=True)
class PseudoLabel:
    """A registered extractor: its name, number of dimensions, unit and optional dependency."""

    name: str
    dims: int
    unit: str
    compute: Callable[[_Analysis], Tensor]
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
        PseudoLabel("f0", 1, "Hz", _f0),
        PseudoLabel("voicing", 1, "periodicity in [0, 1]", _voicing),
        PseudoLabel("hnr", 1, "dB", _hnr),
        PseudoLabel("f0_torchaudio", 1, "Hz", _f0_torchaudio),
        PseudoLabel("loudness", 1, "LKFS (dB)", _loudness),
        PseudoLabel("rms", 1, "dBFS", _rms),
        PseudoLabel("zcr", 1, "crossings per second (Hz)", _zcr),
        PseudoLabel("spectral_centroid", 1, "Hz", _spectral_centroid),
        PseudoLabel("spectral_flatness", 1, "dB", _spectral_flatness),
        PseudoLabel("spectral_rolloff", 1, "Hz", _spectral_rolloff),
        PseudoLabel("log_mel", N_MELS, "log power", _log_mel),
        PseudoLabel("mfcc", N_MFCC, "cepstral coefficient", _mfcc),
        PseudoLabel("f0_praat", 1, "Hz", _f0_praat, requires="parselmouth"),
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
    analysis = _Analysis(wav, hop)
    out = {}
    for name in check_names(names):
        out[name] = _finish(PSEUDO_LABELS[name].compute(analysis).float(), analysis.single)
    return out


def extract_pseudo_label(name: str, wav: Tensor | np.ndarray, hop: int = HOP) -> Tensor:
    """One pseudo-label: ``(T,)`` or ``(T, D)`` (``(B, T, ...)`` for a batch); see the table
    in the module docstring for units."""
    return extract_pseudo_labels([name], wav, hop)[name]
