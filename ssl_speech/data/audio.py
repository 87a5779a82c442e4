"""Reading audio: header checks, partial reads, mono mixing and resampling to 16 kHz.

Files are read with ``soundfile`` (libsndfile); torchaudio is used only for resampling. All
lengths and offsets in this module's public API are counted in samples at the *target* rate
(16 kHz unless told otherwise), so a 44.1 kHz file and a 16 kHz file are addressed alike.

Every problem with a file raises :class:`AudioError`, whose message names the file and says what
to do, so a corpus scan can report or skip it before training starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

SAMPLE_RATE = 16000

# Containers libsndfile reads on every platform we support (MP3 needs libsndfile >= 1.1).
AUDIO_EXTENSIONS = (".flac", ".wav", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au")

# Parameters of torchaudio's default sinc resampler; the partial-read margin depends on them.
_LOWPASS_FILTER_WIDTH = 6
_ROLLOFF = 0.99


class AudioError(ValueError):
    """A file that cannot be used as audio; the message names the file and the fix."""


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says.

    Attributes:
        path: the file.
        num_samples: length in samples at the file's own rate (``sample_rate``), per channel.
        sample_rate: the file's rate in Hz.
        channels: number of channels (mixed to mono on reading).
    """

    path: Path
    num_samples: int
    sample_rate: int
    channels: int

    @property
    def seconds(self) -> float:
        return self.num_samples / self.sample_rate

    def num_samples_at(self, target_sr: int = SAMPLE_RATE) -> int:
        """Length in samples after resampling to ``target_sr`` (torchaudio's output length)."""
        return resampled_length(self.num_samples, self.sample_rate, target_sr)


def resampled_length(num_samples: int, orig_sr: int, target_sr: int) -> int:
    """Samples produced by ``torchaudio.functional.resample`` from ``num_samples`` inputs."""
    if orig_sr == target_sr:
        return num_samples
    g = math.gcd(orig_sr, target_sr)
    return -((-num_samples * (target_sr // g)) // (orig_sr // g))  # exact ceil division


def check_extension(path: str | Path) -> None:
    """Raise :class:`AudioError` unless ``path`` ends in one of :data:`AUDIO_EXTENSIONS`."""
    suffix = Path(path).suffix.lower()
    if suffix not in AUDIO_EXTENSIONS:
        raise AudioError(
            f"{path}: unknown audio extension {suffix!r} (readable: "
            f"{', '.join(AUDIO_EXTENSIONS)}); convert the file, e.g. to FLAC, or drop it"
        )


def _open(path: Path) -> sf.SoundFile:
    check_extension(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file; regenerate the manifest or restore the file")
    try:
        return sf.SoundFile(path)
    except (sf.SoundFileError, RuntimeError, OSError) as err:
        if path.stat().st_size == 0:
            raise AudioError(f"{path}: empty file (0 bytes); delete or re-encode it") from err
        raise AudioError(
            f"{path}: not readable as audio ({err}); re-encode it or remove it from the corpus"
        ) from err


def _header(handle: sf.SoundFile, path: Path) -> AudioInfo:
    if handle.frames <= 0:
        raise AudioError(f"{path}: contains no samples; delete or re-encode it")
    return AudioInfo(path, int(handle.frames), int(handle.samplerate), int(handle.channels))


def audio_info(path: str | Path, check_end: bool = False) -> AudioInfo:
    """The header of ``path``, without decoding the audio.

    Args:
        path: an audio file with one of :data:`AUDIO_EXTENSIONS`.
        check_end: also decode the last sample, which catches truncated files whose header
            promises more samples than the file holds (a seek, about 0.1 ms for FLAC).

    Raises:
        AudioError: unknown extension, missing, empty, unreadable or (with ``check_end``)
            truncated file.
    """
    path = Path(path)
    with _open(path) as handle:
        info = _header(handle, path)
        if check_end:
            _check_end(handle, info)
    return info


def _check_end(handle: sf.SoundFile, info: AudioInfo) -> None:
    try:
        handle.seek(info.num_samples - 1)
        decoded = len(handle.read(1, dtype="float32", always_2d=True))
    except (sf.SoundFileError, RuntimeError) as err:
        raise _truncated(info, f"seeking to its last sample failed: {err}") from err
    if decoded != 1:
        raise _truncated(info, "its last sample could not be decoded")


def _truncated(info: AudioInfo, detail: str) -> AudioError:
    return AudioError(
        f"{info.path}: truncated or corrupt: the header says {info.num_samples} samples but "
        f"{detail}; re-encode or re-download it, or skip it with on_error='skip'"
    )


def _resample_margin(orig_sr: int, target_sr: int) -> tuple[int, int, int]:
    """(input block, output block, margin in blocks) of torchaudio's polyphase resampler.

    The resampler maps each block of ``orig_sr/g`` input samples to ``target_sr/g`` outputs, and
    output block ``i`` reads the inputs within ``width`` samples of block ``i``. A chunk that
    starts on an input block boundary and carries ``margin`` extra blocks on each side therefore
    resamples to exactly the same values as the whole file does.
    """
    g = math.gcd(orig_sr, target_sr)
    block_in, block_out = orig_sr // g, target_sr // g
    width = math.ceil(_LOWPASS_FILTER_WIDTH * block_in / (min(block_in, block_out) * _ROLLOFF))
    return block_in, block_out, -(-width // block_in) + 1


def read_audio(
    path: str | Path,
    start: int = 0,
    num_samples: int | None = None,
    target_sr: int = SAMPLE_RATE,
    expected_total: int | None = None,
) -> np.ndarray:
    """Read ``num_samples`` samples of ``path`` from ``start``, as float32 mono at ``target_sr``.

    ``start`` and ``num_samples`` count samples at ``target_sr`` (``None``: to the end). Without
    resampling only the requested part is decoded; with resampling a short margin around it is
    decoded and the result equals the same slice of the whole resampled file. Channels are
    averaged to mono. ``expected_total``: the file's length (at ``target_sr``) when it was
    scanned; a header that now says otherwise means the file was replaced, an
    :class:`AudioError`.

    Returns:
        ``(num_samples,)`` float32 array in [-1, 1] for PCM sources.

    Raises:
        AudioError: the file is missing, empty, unreadable, truncated or has an unknown extension.
        ValueError: ``start``/``num_samples`` outside the file (a caller error).
    """
    path = Path(path)
    if target_sr <= 0:
        raise ValueError(f"target_sr={target_sr}: must be a positive rate in Hz, e.g. 16000")
    with _open(path) as handle:
        info = _header(handle, path)
        total = info.num_samples_at(target_sr)
        if expected_total is not None and total != expected_total:
            raise AudioError(f"{path}: changed since the corpus scan: {total} samples at "
                             f"{target_sr} Hz now, {expected_total} then; rescan the corpus")
        if num_samples is None:
            num_samples = total - start
        if start < 0 or num_samples < 0 or start + num_samples > total:
            raise ValueError(
                f"{path}: cannot read samples [{start}, {start + num_samples}) of a file with "
                f"{total} samples at {target_sr} Hz; keep windows inside the file"
            )
        if info.sample_rate == target_sr:
            wav = _read_frames(handle, info, start, start + num_samples)
            return _to_mono(wav)
        block_in, block_out, margin = _resample_margin(info.sample_rate, target_sr)
        first = max(0, start // block_out - margin)
        last = -(-(start + num_samples) // block_out) + margin
        src_start, src_stop = first * block_in, min(info.num_samples, last * block_in)
        chunk = _to_mono(_read_frames(handle, info, src_start, src_stop))
    out = AF.resample(torch.from_numpy(chunk), info.sample_rate, target_sr)
    offset = start - first * block_out
    return out[offset : offset + num_samples].numpy()


def _read_frames(handle: sf.SoundFile, info: AudioInfo, start: int, stop: int) -> np.ndarray:
    """Samples ``[start, stop)`` at the file's rate as ``(samples, channels)`` float32."""
    try:
        handle.seek(start)
        wav = handle.read(stop - start, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as err:
        raise _truncated(info, f"decoding samples [{start}, {stop}) failed: {err}") from err
    if len(wav) != stop - start:
        raise _truncated(info, f"only {start + len(wav)} could be decoded")
    return wav


def _to_mono(wav: np.ndarray) -> np.ndarray:
    if wav.shape[1] == 1:
        return np.ascontiguousarray(wav[:, 0])
    return wav.mean(axis=1, dtype=np.float32)
