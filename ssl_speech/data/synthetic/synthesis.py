"""Source-filter synthesis of speech-like audio from timed phone tokens.

Sources: a glottal pulse train (Rosenberg flow derivative, jitter, shimmer, per-speaker spectral
tilt), aspiration noise (also mixed into voicing as breathiness) and frication noise. Filters: a
cascade of five formant resonators with a nasal pole-zero pair and a low-pass for closed-tract
murmur (voice bars, nasals) act on voicing and aspiration; a place-dependent noise spectrum acts
on frication and stop bursts (Klatt, 1980, in spirit).

The filters vary every 5 ms. Per-sample IIR loops are slow in Python, so the filtering is
frame-wise in the frequency domain with overlap-add: the sources are cut into Hann frames of
160 samples every 80 (the frames sum to one), each frame is zero-padded to 512 samples, its
spectrum is multiplied by the analytic frequency response of that frame's filters on the FFT
grid, and the inverse FFTs are overlap-added; all of it vectorised over frames. Formant
targets come from the phone table and are smoothed across phone boundaries (coarticulation);
amplitude envelopes are sample-accurate so stop bursts stay abrupt. A room (exponential
reverberation tail), a microphone response, coloured background noise and a recording level
finish the signal.

Frames: frame ``t`` is centred on sample ``80 t``; an utterance of ``n`` hops has ``n + 1``
frames and ``80 n`` samples.
"""

from __future__ import annotations

import numpy as np

from ssl_speech.data.audio import SAMPLE_RATE
from ssl_speech.data.synthetic.phonetics import INVENTORY, PLACES, SCHWA, SILENCE, Phone, Token
from ssl_speech.data.synthetic.voices import (  # noqa: F401 (the names callers import here)
    FREQS,
    HOP,
    LEAD,
    NFFT,
    WINDOW,
    Channel,
    Speaker,
    draw_channel,
    draw_speaker,
)

_HANN = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WINDOW) / WINDOW)).astype(np.float32)
_F4, _F5 = 3400.0, 4400.0  # upper formants, Hz (male reference)
# Formant bandwidths (Hz, B1-B5) by phone kind, before the speaker's scale.
_BANDWIDTHS = {
    "vowel": (70, 90, 140, 220, 280),
    "diphthong": (70, 90, 140, 220, 280),
    "approximant": (90, 120, 180, 250, 300),
    "nasal": (100, 300, 400, 400, 400),
}
_OBSTRUENT_BANDWIDTHS = (200, 200, 260, 320, 360)  # open glottis damps the tract
_NASAL_POLE = 300.0
TOKEN_FORMANT_SD = 0.06  # s.d. of log formant targets between tokens of one speaker


def synthesize(
    tokens: list[Token], speaker: Speaker, channel: Channel, rng: np.random.Generator
) -> np.ndarray:
    """Render timed tokens as a float32 waveform of ``80 * tokens[-1].end`` samples in [-1, 1]."""
    num_hops = tokens[-1].end
    f0 = _f0_track(tokens, speaker, rng)
    env = _envelopes(tokens, rng)
    tract, fric = _filters(tokens, speaker, rng)

    n = HOP * num_hops
    f0_samples = np.interp(np.arange(n), HOP * np.arange(num_hops + 1), f0)
    voice, phase = _glottal_source(f0_samples, speaker, rng)
    breath = speaker.breathiness * (0.5 + 0.5 * np.cos(2.0 * np.pi * phase))  # open-phase noise
    tract_src = voice * env["voice"] + rng.standard_normal(n) * (
        env["aspiration"] + breath * env["voice"]
    )
    fric_src = rng.standard_normal(n) * env["frication"]
    eq = (10.0 ** (channel.eq_db / 20.0)).astype(np.float32)
    # only frames where a source is on need transforms (silence and closures are common)
    voiced = _active_frames(env["voice"] + env["aspiration"])
    noisy = _active_frames(env["frication"])
    spectrum = np.zeros(tract.shape, dtype=np.complex64)
    spectrum[voiced] = _frame_spectra(tract_src, voiced) * tract[voiced]
    spectrum[noisy] += _frame_spectra(fric_src, noisy) * fric[noisy]
    sounding = voiced | noisy
    filtered = np.zeros((len(sounding), NFFT), dtype=np.float32)
    filtered[sounding] = np.fft.irfft(spectrum[sounding] * eq, NFFT, axis=1)
    speech = _overlap_add(filtered, n)
    speech = _reverberate(speech, channel, rng)
    return _record(speech, tokens, channel, rng)


# ----------------------------------------------------------------------------- parameter tracks
def _smooth(x: np.ndarray, width_frames: float) -> np.ndarray:
    """Hann-kernel smoothing along axis 0 with edge padding; ``x`` is ``(T,)`` or ``(T, C)``."""
    w = max(int(round(width_frames)), 1)
    if w < 2:
        return x
    kernel = np.hanning(w + 2)[1:-1]
    kernel /= kernel.sum()
    pad = w // 2
    flat = x.reshape(len(x), -1)
    padded = np.pad(flat, ((pad, w - 1 - pad), (0, 0)), mode="edge")
    out = np.stack([np.convolve(padded[:, c], kernel, mode="valid") for c in range(flat.shape[1])],
                   axis=1)
    return out.reshape(x.shape)


def _velar_f2(tokens: list[Token], i: int) -> float:
    """F2 locus of a velar: fronted before front vowels, backed before back ones."""
    for j in (i + 1, i + 2, i - 1, i - 2):
        if 0 <= j < len(tokens) and INVENTORY[tokens[j].phone].is_vowel:
            phone = INVENTORY[tokens[j].phone]
            f2 = phone.formants[1] if j > i or phone.offglide is None else phone.offglide[1]
            return 700.0 + 0.75 * f2
    return 1800.0


def _filters(
    tokens: list[Token], speaker: Speaker, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame responses on the FFT grid: tract ``(T, K)`` complex64, frication ``(T, K)``
    float32 (zero-phase), for the ``T = tokens[-1].end + 1`` frames."""
    T = tokens[-1].end + 1
    formants = np.full((T, 3), np.nan)
    bandwidths = np.zeros((T, 5))
    nasal = np.zeros(T)  # nasal coupling 0..1
    zero = np.zeros(T)  # nasal antiformant, Hz
    closed = np.zeros(T)  # 1 where the tract is occluded (voice bar, murmur)
    noise = np.zeros((T, 2, 3))  # (centre Hz, bandwidth Hz, linear gain) of two noise peaks
    noise[:, :, :2] = 1000.0
    velars = {}
    for i, tok in enumerate(tokens):
        phone = INVENTORY[tok.phone]
        sl = slice(tok.start, tok.end + (1 if i == len(tokens) - 1 else 0))
        n = sl.stop - sl.start
        bandwidths[sl] = _BANDWIDTHS.get(phone.kind, _OBSTRUENT_BANDWIDTHS)
        peaks = PLACES[phone.place].noise
        if phone.place == "velar":
            velars[i] = _velar_f2(tokens, i)
            peaks = ((velars[i] * 1.05, peaks[0][1], 0.0),) + peaks[1:]
        for k, (centre, width, gain_db) in enumerate(peaks[:2]):
            noise[sl, k] = (centre * speaker.vtl, width, 10.0 ** (gain_db / 20.0))
        if phone.kind in ("silence", "aspirate"):
            continue  # formants interpolated from the neighbours below
        # token-to-token variability of the same speaker's targets
        variation = np.exp(rng.normal(0.0, TOKEN_FORMANT_SD, 3))
        target = np.array(phone.formants) * speaker.formant_offsets[tok.phone] * variation
        if i in velars:
            target[1:] = velars[i], max(velars[i] + 250.0, 2400.0)
        if tok.reduced:
            target = 0.5 * target + 0.5 * np.array(SCHWA)
        if phone.offglide is None:
            formants[sl] = target
        else:
            glide = np.array(phone.offglide) * speaker.formant_offsets[tok.phone] * variation
            w = np.clip(np.linspace(-0.4, 1.1, n), 0.0, 1.0)[:, None]  # steady onset, then glide
            formants[sl] = (1.0 - w) * target + w * glide
        if phone.kind == "nasal":
            nasal[sl], zero[sl], closed[sl] = 1.0, PLACES[phone.place].nasal_zero, 0.75
        if phone.kind in ("stop", "affricate") and phone.voiced:
            closed[sl] = 1.0
        if phone.kind == "fricative" and phone.voiced:
            closed[sl] = 0.7
    idx = np.arange(T)
    for k in range(3):  # silence and hh take the neighbours' targets
        known = ~np.isnan(formants[:, k])
        formants[:, k] = np.interp(idx, idx[known], formants[known, k]) if known.any() else SCHWA[k]
    frames_per_ms = 1.0 / (1000.0 * HOP / SAMPLE_RATE)
    formants = _smooth(formants, speaker.coarticulation_ms * frames_per_ms) * speaker.vtl
    bandwidths = _smooth(bandwidths, 15.0 * frames_per_ms) * speaker.bandwidth_scale
    nasal = _smooth(nasal, 40.0 * frames_per_ms)  # vowels next to nasals are nasalised
    zero_hz = np.where(zero > 0, zero, np.nan)
    zero_hz = np.interp(idx, idx[zero > 0], zero_hz[zero > 0]) if (zero > 0).any() else zero + 1e3
    pole = _NASAL_POLE * speaker.vtl
    zero_hz = pole + nasal * (zero_hz * speaker.vtl - pole)
    cutoff = np.exp(_smooth(np.log(1e5) + closed * (np.log(500.0) - np.log(1e5)), 2.0))

    upper = np.ones(T) * speaker.vtl
    poles = [(formants[:, k], bandwidths[:, k]) for k in range(3)]
    poles += [(_F4 * upper, bandwidths[:, 3]), (_F5 * upper, bandwidths[:, 4])]
    poles.append((np.full(T, pole), np.full(T, 100.0)))
    tract = _all_pole_response(poles) / _all_pole_response([(zero_hz, np.full(T, 100.0))])
    tilt = 1.0 / np.sqrt(1.0 + (FREQS / speaker.tilt_hz) ** 2)
    lowpass = 1.0 / np.sqrt(1.0 + (FREQS[None] / cutoff[:, None]) ** 8)
    tract *= (tilt[None] * lowpass).astype(np.float32)

    f = np.maximum(FREQS, 1.0).astype(np.float32)[None, None]
    centre = np.minimum(noise[:, :, 0:1], 7600.0).astype(np.float32)
    width, gain = noise[:, :, 1:2].astype(np.float32), noise[:, :, 2:3].astype(np.float32)
    # a squared band-pass: 12 dB/octave skirts keep the places apart
    shape = gain / (1.0 + ((f * f - centre * centre) / (f * width)) ** 2)
    return tract, shape.sum(axis=1) + np.float32(0.03)


def _all_pole_response(poles: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Cascade of two-pole resonators, each with unit gain at DC, on the FFT grid.

    ``poles`` holds ``(freq, bandwidth)`` pairs of ``(T,)`` arrays in Hz. The denominator
    polynomial in z^-1 is multiplied out per frame and evaluated on the grid with one FFT.
    Returns ``(T, K)`` complex64.
    """
    T = len(poles[0][0])
    den = np.ones((T, 1))
    gain = np.ones(T)
    for freq, bandwidth in poles:
        r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
        c, d = 2.0 * r * np.cos(2.0 * np.pi * freq / SAMPLE_RATE), r * r
        out = np.zeros((T, den.shape[1] + 2))
        out[:, :-2] += den
        out[:, 1:-1] -= c[:, None] * den
        out[:, 2:] += d[:, None] * den
        den, gain = out, gain * (1.0 - c + d)
    # float64: near DC a degree-12 polynomial cancels to ~1e-6 of its coefficients
    response = np.fft.rfft(den, NFFT, axis=1)
    return (gain[:, None] / response).astype(np.complex64)


def _f0_track(tokens: list[Token], speaker: Speaker, rng: np.random.Generator) -> np.ndarray:
    """``(T,)`` F0 in Hz: phrase declination, pitch accents, a final fall or rise, wander."""
    T = tokens[-1].end + 1
    t = np.arange(T, dtype=np.float64)
    st = np.zeros(T)  # semitones relative to the speaker's mean
    R = speaker.f0_range_st
    starts = [tokens[0].end] + [tok.end for tok in tokens[1:-1] if tok.phone == SILENCE]
    ends = [tok.start for tok in tokens[1:] if tok.phone == SILENCE]
    for a, b in zip(starts, ends):
        if b > a:
            st[a:b] = np.linspace(0.25 * R, -0.35 * R, b - a)
    for tok in tokens:
        if tok.stressed and rng.random() < 0.6:
            centre = 0.5 * (tok.start + tok.end) + 4.0
            st += rng.uniform(0.25, 0.8) * R * np.exp(-0.5 * ((t - centre) / 12.0) ** 2)
    last_end = ends[-1]
    ramp = np.clip((t - (last_end - 50)) / 50.0, 0.0, 1.0)
    st += (0.8 if rng.random() < 0.15 else -0.25) * R * ramp  # question rise or final fall
    st += _smooth(rng.standard_normal(T), 40.0) * 2.0  # slow wander, about 0.4 st
    return np.clip(speaker.f0_hz * 2.0 ** (st / 12.0), 50.0, 450.0)


def _envelopes(tokens: list[Token], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-sample source amplitudes: ``voice``, ``aspiration``, ``frication``, each ``(S,)``."""
    T = tokens[-1].end + 1
    frame = {k: np.zeros(T) for k in ("voice", "aspiration", "frication")}
    n = HOP * tokens[-1].end
    sharp = np.zeros(n)  # bursts and affricate releases, not smoothed
    for tok in tokens:
        phone = INVENTORY[tok.phone]
        level = 10.0 ** (phone.level_db / 20.0)
        sl = slice(tok.start, tok.end)
        if phone.is_vowel:
            gain_db = 2.0 if tok.stressed else (-3.0 if tok.reduced else 0.0)
            frame["voice"][sl] = level * 10.0 ** ((gain_db - 2.0 * tok.phrase_final) / 20.0)
        elif phone.kind in ("nasal", "approximant"):
            frame["voice"][sl] = level
        elif phone.kind == "aspirate":
            frame["aspiration"][sl] = level
        elif phone.kind == "fricative":
            frame["frication"][sl] = level
            frame["voice"][sl] = 0.35 if phone.voiced else 0.0
        elif phone.kind in ("stop", "affricate"):
            _release(tok, phone, level, frame, sharp, rng)
    out = {}
    grid = HOP * np.arange(T)
    for name, width_ms in (("voice", 12.0), ("aspiration", 10.0), ("frication", 25.0)):
        smooth = _smooth(frame[name], width_ms / 5.0)
        out[name] = np.interp(np.arange(n), grid, smooth).astype(np.float32)
    out["frication"] += sharp.astype(np.float32)
    return out


def _release(
    tok: Token,
    phone: Phone,
    level: float,
    frame: dict[str, np.ndarray],
    sharp: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Closure, burst and aspiration of a stop, or closure and frication of an affricate."""
    a, b = HOP * tok.start, HOP * tok.end
    place_vot = {"labial": 0.8, "alveolar": 1.0, "velar": 1.2, "postalveolar": 1.0}[phone.place]
    if phone.kind == "affricate":
        release = a + int((b - a) * rng.uniform(0.35, 0.5))
        t = np.arange(b - release)
        ramps = np.minimum(t / 32.0, 1.0) * np.minimum((b - release - t) / 160.0, 1.0)
        sharp[release:b] = level * ramps  # abrupt onset, 10 ms fade at the end
    else:
        vot_ms = (50.0 if not phone.voiced else 12.0) * place_vot * rng.uniform(0.7, 1.3)
        longest = (0.3 if phone.voiced else 0.6) * (b - a)
        release = b - int(min(vot_ms * SAMPLE_RATE / 1000, longest))
        tau = 0.002 * SAMPLE_RATE * place_vot  # velar bursts last longer
        sharp[release:b] += level * np.exp(-np.arange(b - release) / tau)
        asp_level = level * (2.5 if not phone.voiced else 0.5)
        hop_release = release // HOP
        frame["aspiration"][hop_release : tok.end] = asp_level
    if phone.voiced and rng.random() < 0.75:  # voice bar during the closure
        frame["voice"][tok.start : release // HOP] = 0.12


# ----------------------------------------------------------------------------- signal processing
def _glottal_source(
    f0: np.ndarray, speaker: Speaker, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Pulse train ``(S,)`` shaped as a Rosenberg flow derivative with tilt, and its phase."""
    n = len(f0)
    phase = np.cumsum(f0 / SAMPLE_RATE)
    cycle = np.floor(phase)
    at = np.nonzero(np.diff(cycle))[0]  # pulse k between samples at[k] and at[k] + 1
    frac = (cycle[at + 1] - phase[at]) / (phase[at + 1] - phase[at])
    period = SAMPLE_RATE / f0[at]
    when = at + frac + rng.normal(0.0, speaker.jitter, len(at)) * period
    amp = np.exp(rng.normal(0.0, speaker.shimmer, len(at)))
    when = np.clip(when, 0.0, n - 2.0)
    lo = np.floor(when).astype(np.int64)
    w = when - lo
    pulses = np.zeros(n)
    np.add.at(pulses, lo, amp * (1.0 - w))
    np.add.at(pulses, lo + 1, amp * w)

    t0 = SAMPLE_RATE / speaker.f0_hz
    rise, fall = 0.65 * speaker.open_quotient * t0, 0.35 * speaker.open_quotient * t0
    t = np.arange(int(np.ceil(rise + fall)) + 1, dtype=np.float64)
    flow = np.where(t < rise, 0.5 - 0.5 * np.cos(np.pi * t / rise),
                    np.cos(0.5 * np.pi * np.clip(t - rise, 0.0, fall) / fall))
    flow[t > rise + fall] = 0.0
    pulse = np.diff(flow, prepend=0.0) * t0 / 8.0  # flow derivative, level roughly f0-free
    size = 1 << int(np.ceil(np.log2(n + 2048)))  # a power of two: fast FFT
    freqs = np.fft.rfftfreq(size, 1.0 / SAMPLE_RATE)
    shaping = np.fft.rfft(pulse, size) / np.sqrt(1.0 + (freqs / speaker.tilt_hz) ** 2)
    voice = np.fft.irfft(np.fft.rfft(pulses, size) * shaping, size)[:n]
    return voice.astype(np.float32), phase


def _active_frames(envelope: np.ndarray) -> np.ndarray:
    """``(T,)`` bool: frames whose window overlaps a non-zero part of ``envelope`` (S,)."""
    on = envelope.reshape(-1, HOP).max(axis=1) > 0
    active = np.zeros(len(on) + 1, dtype=bool)
    active[:-1] |= on
    active[1:] |= on
    return active


def _frame_spectra(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Spectra ``(R, K)`` of the Hann frames of ``x`` (S,) centred on ``80 t`` for the ``R``
    frames selected by the ``(S / 80 + 1,)`` boolean ``rows``."""
    blocks = np.concatenate([np.zeros(HOP), x, np.zeros(HOP)]).astype(np.float32)
    blocks = blocks.reshape(-1, HOP)
    index = np.nonzero(rows)[0]
    frames = np.zeros((len(index), NFFT), dtype=np.float32)
    frames[:, LEAD : LEAD + HOP] = blocks[index]
    frames[:, LEAD + HOP : LEAD + WINDOW] = blocks[index + 1]
    frames[:, LEAD : LEAD + WINDOW] *= _HANN
    return np.fft.rfft(frames, axis=1)


def _overlap_add(frames: np.ndarray, n: int) -> np.ndarray:
    """Overlap-add filtered frames ``(T, NFFT)`` back to ``n`` samples (inverse of framing)."""
    T = len(frames)
    per = -(-NFFT // HOP)
    padded = np.zeros((T, per * HOP), dtype=np.float32)
    padded[:, :NFFT] = frames
    chunks = padded.reshape(T, per, HOP)
    out = np.zeros((T + per, HOP), dtype=np.float32)
    for j in range(per):
        out[j : j + T] += chunks[:, j]
    return out.reshape(-1)[HOP + LEAD : HOP + LEAD + n]


def _reverberate(x: np.ndarray, channel: Channel, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a direct path plus an exponentially decaying noise tail."""
    length = int(channel.rt60_s * SAMPLE_RATE)
    t = np.arange(length) / SAMPLE_RATE
    tail = rng.standard_normal(length) * np.exp(-6.91 * t / channel.rt60_s)
    tail[: int(0.003 * SAMPLE_RATE)] = 0.0  # first reflections arrive after a few ms
    tail *= 10.0 ** (-channel.direct_to_reverb_db / 20.0) / np.sqrt(np.sum(tail**2))
    rir = tail
    rir[0] = 1.0
    size = 1 << int(np.ceil(np.log2(len(x) + length)))
    wet = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(rir, size), size)
    return wet[: len(x)]


def _record(
    speech: np.ndarray, tokens: list[Token], channel: Channel, rng: np.random.Generator
) -> np.ndarray:
    """Set the level of active speech, add background noise at the channel's SNR, limit peaks."""
    active = np.zeros(len(speech), dtype=bool)
    for tok in tokens:
        if tok.phone != SILENCE:
            active[HOP * tok.start : HOP * tok.end] = True
    rms = np.sqrt(np.mean(speech[active] ** 2)) if active.any() else 1.0
    level = 10.0 ** ((channel.level_db + rng.normal(0.0, 2.0)) / 20.0)
    speech = speech * (level / max(rms, 1e-12))
    n = len(speech)
    size = 1 << int(np.ceil(np.log2(n)))
    freqs = np.maximum(np.fft.rfftfreq(size, 1.0 / SAMPLE_RATE), 50.0)
    white = np.fft.rfft(rng.standard_normal(size))
    noise = np.fft.irfft(white * freqs ** (-channel.noise_slope / 2), size)[:n]
    snr = channel.snr_db + rng.normal(0.0, 2.0)
    noise *= level * 10.0 ** (-snr / 20.0) / np.sqrt(np.mean(noise**2))
    out = speech + noise
    if not np.isfinite(out).all():
        raise RuntimeError("synthesis produced non-finite samples; this is a bug, please report")
    peak = np.max(np.abs(out))
    if peak > 0.95:
        out *= 0.95 / peak
    return out.astype(np.float32)
