"""F0 and voicing: YIN period candidates and a Viterbi path through them.

:func:`pitch_track` takes each frame's period candidates from YIN's cumulative-mean normalised
difference function (de Cheveigné and Kawahara, 2002) and chooses among them, and between voiced
and unvoiced, with a Viterbi path that penalises octave jumps and voicing changes (the idea of
Praat's path finder, Boersma 1993). Frames follow :mod:`ssl_speech.signal.short_time`. The costs
were tuned on the embedded corpus, whose true F0 is known; their agreement with Praat on real
recordings is measured by :mod:`ssl_speech.signal.pitch_agreement`. :func:`praat_pitch` runs
Praat's own autocorrelation method on the same frame grid (optional ``praat-parselmouth``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ssl_speech.data.audio import SAMPLE_RATE
from ssl_speech.signal.short_time import HOP, POWER_FLOOR, WIN, as_batch, check_hop, frames
from ssl_speech.signal.single_thread import single_thread

F0_MIN = 50.0  # Hz: below every voice of the embedded corpus and most adult speech
F0_MAX = 500.0  # Hz
# Pitch tracker costs, tuned on the embedded corpus against its true F0 (see the tests).
NUM_CANDIDATES = 4  # period candidates per frame
OCTAVE_COST = 0.03  # per octave below F0_MAX
JUMP_COST = 1.0  # per octave of F0 change between frames
UNVOICED_COST = 0.55  # cost of the unvoiced state (a candidate's cost is its aperiodicity)
SWITCH_COST = 0.3  # per voicing change
SILENCE_DB = 45.0  # frames this far below the loudest frame are unvoiced


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
    x, single = as_batch(wav)
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


def praat_pitch(wav: Tensor | np.ndarray, hop: int = HOP, f_min: float = F0_MIN,
                f_max: float = F0_MAX) -> Tensor:
    """Praat's autocorrelation pitch (``To Pitch (ac)``, its default settings otherwise) on our
    frame grid: ``(S,)`` or ``(B, S)`` audio at 16 kHz to F0 in Hz ``(T,)`` or ``(B, T)``, NaN
    where Praat finds the frame unvoiced. Needs the optional ``praat-parselmouth``; runs on the
    CPU, one utterance at a time, and returns on the input's device."""
    try:
        import parselmouth
    except ImportError as error:
        raise ImportError(
            "Praat's pitch needs the optional package praat-parselmouth (pip install "
            "praat-parselmouth); the built-in tracker is pitch_track (pseudo-label 'f0')"
        ) from error
    check_hop(hop)
    x, single = as_batch(wav)
    B, S = x.shape
    T = S // hop
    out = torch.full((B, T), math.nan)
    centres = (np.arange(T) * hop + hop / 2) / SAMPLE_RATE
    for b, row in enumerate(x.cpu().double().numpy()):
        pitch = parselmouth.Sound(row, SAMPLE_RATE).to_pitch_ac(
            time_step=hop / SAMPLE_RATE, pitch_floor=f_min, pitch_ceiling=f_max)
        values = np.array([pitch.get_value_at_time(t) for t in centres], dtype=np.float64)
        out[b] = torch.from_numpy(values).float()  # Praat gives NaN where unvoiced
    out = out.to(x.device)
    return out[0] if single else out
