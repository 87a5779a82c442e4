"""Segments of a corpus for the pseudo-label utility, and their segment-level inputs and targets.

A class of the downstream task (a phone, a speaker) is represented by segments: spans of 10 ms
frames in utterances (the runs of one phone in the alignments, or chunks or whole utterances of
one speaker). Each segment gets an input ``X`` (its log-mel frames resampled to a fixed number
of points, :func:`downsample_segments`) and a target ``Z`` (the mean of a pseudo-label over its
frames, :func:`segment_means`); :mod:`ssl_speech.eval.utility_hsic` scores them.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

IGNORE_INDEX = -100
NUM_POINTS = 10  # points per resampled segment, as the reference implementation


@dataclass
class Segments:
    """Labelled spans of frames in a set of utterances; every array is ``(S,)`` int64.

    Attributes:
        utts: utterance ids; ``utt_index`` points into it.
        utt_index: utterance of each segment.
        start, end: frame span ``[start, end)`` in the utterance (10 ms label frames).
        label: class of each segment (phone index or speaker index).
    """

    utts: list[str]
    utt_index: np.ndarray
    start: np.ndarray
    end: np.ndarray
    label: np.ndarray

    def __post_init__(self) -> None:
        arrays = [np.asarray(a, dtype=np.int64) for a in
                  (self.utt_index, self.start, self.end, self.label)]
        self.utt_index, self.start, self.end, self.label = arrays
        if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1:
            raise ValueError(
                f"Segments arrays must all be (S,), got {[a.shape for a in arrays]}"
            )
        if len(self) and not (self.end > self.start).all():
            raise ValueError("every segment needs end > start (at least one frame)")
        if len(self) and not (self.utt_index.min() >= 0 and self.utt_index.max() < len(self.utts)):
            raise ValueError(f"utt_index must lie in [0, {len(self.utts)})")

    def __len__(self) -> int:
        return int(self.label.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        return self.end - self.start

    def select(self, keep: np.ndarray) -> Segments:
        """The segments where the boolean ``keep`` ``(S,)`` is true."""
        return Segments(self.utts, self.utt_index[keep], self.start[keep], self.end[keep],
                        self.label[keep])

    def keys(self, seed: int) -> np.ndarray:
        """``(S,)`` pseudo-random int64 keys from each segment's identity (utterance, start,
        end) and ``seed``: the same segment gets the same key in any order or subset."""
        return np.array([
            zlib.crc32(f"{seed}:{self.utts[u]}:{a}:{b}".encode())
            for u, a, b in zip(self.utt_index, self.start, self.end)
        ], dtype=np.int64)


def _runs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Starts, ends and values of the runs of equal values in ``labels`` ``(T,)``."""
    if labels.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [labels.size]])
    return starts, ends, labels[starts]


def phone_segments(
    alignments: Mapping[str, np.ndarray],
    ignore: Iterable[int] = (IGNORE_INDEX,),
    num_frames: Mapping[str, int] | None = None,
) -> Segments:
    """Contiguous runs of one phone in each utterance's frame labels.

    Args:
        alignments: ``{utt: (T,) int}`` frame labels (10 ms).
        ignore: labels whose runs are left out (default: unaligned frames, ``-100``).
        num_frames: ``{utt: frames}`` to cut the labels to (the features' length); runs past
            it are shortened or dropped.

    Returns:
        Segments in a canonical order (utterances sorted by id, then by time).
    """
    ignore = set(ignore)
    utts = sorted(alignments if num_frames is None else set(alignments) & set(num_frames))
    parts: list[tuple[np.ndarray, ...]] = []
    for i, utt in enumerate(utts):
        labels = np.asarray(alignments[utt], dtype=np.int64)
        if num_frames is not None:
            labels = labels[: num_frames[utt]]
        starts, ends, values = _runs(labels)
        keep = ~np.isin(values, list(ignore))
        parts.append((np.full(int(keep.sum()), i), starts[keep], ends[keep], values[keep]))
    if not parts:
        raise ValueError("no utterances to segment: the alignments (and features) share no id")
    utt_index, start, end, label = (np.concatenate(p) for p in zip(*parts))
    return Segments(utts, utt_index, start, end, label)


def speaker_segments(
    num_frames: Mapping[str, int],
    speakers: Mapping[str, int],
    chunk_frames: int | None = 200,
) -> Segments:
    """Whole utterances (``chunk_frames=None``) or consecutive chunks of ``chunk_frames``
    frames (a shorter remainder is dropped), labelled with their speaker index."""
    if chunk_frames is not None and chunk_frames < 1:
        raise ValueError(f"chunk_frames must be None (whole utterances) or >= 1, "
                         f"got {chunk_frames}")
    utts = sorted(num_frames)
    missing = [u for u in utts if u not in speakers]
    if missing:
        raise KeyError(f"{len(missing)} utterances have no speaker, e.g. {missing[:3]}")
    rows = []
    for i, utt in enumerate(utts):
        T = int(num_frames[utt])
        size = T if chunk_frames is None else chunk_frames
        for a in range(0, T - size + 1 if size > 0 else 0, max(size, 1)):
            rows.append((i, a, a + size, int(speakers[utt])))
    if not rows:
        raise ValueError(f"no utterance is as long as chunk_frames={chunk_frames}; lower it")
    utt_index, start, end, label = (np.array(c, dtype=np.int64) for c in zip(*rows))
    return Segments(utts, utt_index, start, end, label)



def flat_frames(values: Mapping[str, np.ndarray | Tensor], segments: Segments
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """Rows of every segment's frames ``(N, D)``, their segment ``(N,)`` and position ``(N,)``."""
    tables = []
    offsets = np.zeros(len(segments.utts) + 1, dtype=np.int64)
    for i, utt in enumerate(segments.utts):
        if utt not in values:
            raise KeyError(f"no frames for utterance {utt!r}")
        table = torch.as_tensor(np.asarray(values[utt], dtype=np.float32))
        table = table[:, None] if table.dim() == 1 else table
        tables.append(table)
        offsets[i + 1] = offsets[i] + table.shape[0]
    if len({t.shape[1] for t in tables}) > 1:
        raise ValueError("every utterance must have the same number of dimensions")
    lengths = segments.lengths
    too_long = segments.end > (offsets[1:] - offsets[:-1])[segments.utt_index]
    if too_long.any():
        s = int(np.flatnonzero(too_long)[0])
        utt = segments.utts[segments.utt_index[s]]
        raise ValueError(
            f"segment [{segments.start[s]}, {segments.end[s]}) of {utt!r} "
            "runs past its utterance's frames; build the segments with num_frames= the features' "
            "lengths"
        )
    which = np.repeat(np.arange(len(segments)), lengths)
    position = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    rows = offsets[segments.utt_index][which] + segments.start[which] + position
    return (torch.cat(tables)[torch.from_numpy(rows)], torch.from_numpy(which),
            torch.from_numpy(position))


def downsample_segments(
    features: Mapping[str, np.ndarray | Tensor],
    segments: Segments,
    num_points: int = NUM_POINTS,
    std_ratio: float = 0.1,
    min_std: float = 0.5,
    standardize: bool = True,
) -> Tensor:
    """Each segment's frames resampled to ``num_points`` by Gaussian-weighted averaging.

    Point ``p`` of a segment of ``n`` frames is the average of its frames weighted by a Gaussian
    centred at ``(p + 0.5) n / num_points`` frames (frame ``i`` sits at ``i + 0.5``) with
    standard deviation ``max(std_ratio n, min_std)`` frames; the weights of each point sum to
    one. Short segments are interpolated smoothly, long ones summarised.

    Args:
        features: ``{utt: (T, F)}`` frame features (log-mel).
        segments: spans of those frames.
        standardize: first standardise each dimension with its mean and standard deviation over
            all the segments' frames.

    Returns:
        ``(S, num_points, F)`` float32.
    """
    if num_points < 1 or std_ratio <= 0 or min_std <= 0:
        raise ValueError(f"need num_points >= 1, std_ratio > 0 and min_std > 0, got "
                         f"{num_points}, {std_ratio}, {min_std}")
    rows, which, position = flat_frames(features, segments)
    if standardize:
        var, mean = torch.var_mean(rows, dim=0, correction=0)
        rows = (rows - mean) / var.sqrt().clamp_min(1e-5)
    n = torch.from_numpy(segments.lengths).float()[which]  # (N,) length of each row's segment
    centres = (torch.arange(num_points) + 0.5) / num_points  # fractions of the segment
    std = (std_ratio * n).clamp_min(min_std)
    weight = torch.exp(-0.5 * ((position[:, None] + 0.5 - centres * n[:, None]) / std[:, None])
                       ** 2)  # (N, P)
    total = torch.zeros(len(segments), num_points).index_add_(0, which, weight)
    out = torch.zeros(len(segments), num_points, rows.shape[1])
    for p in range(num_points):  # P small: one scatter per point bounds memory to (N, F)
        out[:, p].index_add_(0, which, weight[:, p : p + 1] * rows)
    return out / total[..., None]


def segment_means(values: Mapping[str, np.ndarray | Tensor], segments: Segments) -> Tensor:
    """NaN-aware mean of each segment's frames: ``(S, D)`` float32, NaN where a dimension has
    no finite value in the segment. ``values``: ``{utt: (T,) or (T, D)}``."""
    rows, which, _ = flat_frames(values, segments)
    finite = rows.isfinite()
    total = torch.zeros(len(segments), rows.shape[1]).index_add_(
        0, which, torch.where(finite, rows, torch.zeros_like(rows)))
    count = torch.zeros(len(segments), rows.shape[1]).index_add_(0, which, finite.float())
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))
