"""Labelled frames a probe trains on: in memory, or a memory-mapped store on disk.

A probe reads its training frames as a :class:`FrameTable`: ``N`` rows of ``D`` features, an
``(N,)`` label vector and, per utterance, the rows it owns. Rows are gathered by index, one
minibatch at a time, so the probe's loop is the same whether the rows live in RAM
(:class:`ArrayFrames`) or on disk (:class:`FrameStore`).

A frame store is a directory with ``frames.bin`` (``(N, D)`` raw float32 or float16, read
through ``numpy.memmap``), ``labels.npy`` (``(N,)`` int64) and ``index.json`` (utterance ids
and their row ranges). :func:`write_frame_store` fills it one utterance at a time, so writing
holds one utterance; reading holds one minibatch plus the labels and a shuffled index
(8 + 8 bytes per frame: about 0.6 GB for LibriSpeech train-clean-100's 36 M frames, against
37 GB for its float32 features at 256 dimensions).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

FRAMES = "frames.bin"
LABELS = "labels.npy"
INDEX = "index.json"
DTYPES = ("float32", "float16")


class FrameTable(Protocol):
    """Rows of labelled frames; ``rows(index)`` gathers ``(len(index), dim)`` float32."""

    labels: np.ndarray
    utterances: dict[str, tuple[int, int]]

    @property
    def dim(self) -> int: ...

    def __len__(self) -> int: ...

    def rows(self, index: np.ndarray) -> np.ndarray: ...


class ArrayFrames:
    """A frame table over arrays in memory.

    Args:
        frames: ``(N, D)`` features (any float dtype; rows come back as float32).
        labels: ``(N,)`` integer labels (``-100``: ignored).
        utterances: ``{utt: (start, stop)}`` row ranges (default: one pseudo-utterance).
    """

    def __init__(self, frames: np.ndarray, labels: np.ndarray,
                 utterances: Mapping[str, tuple[int, int]] | None = None) -> None:
        if frames.ndim != 2 or labels.ndim != 1 or frames.shape[0] != labels.shape[0]:
            raise ValueError(f"frames must be (N, D) and labels (N,), got {frames.shape} and "
                             f"{labels.shape}")
        self.frames = frames
        self.labels = np.asarray(labels, dtype=np.int64)
        self.utterances = dict(utterances or {"": (0, frames.shape[0])})

    @property
    def dim(self) -> int:
        return int(self.frames.shape[1])

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def rows(self, index: np.ndarray) -> np.ndarray:
        return np.asarray(self.frames[index], dtype=np.float32)


class FrameStore(ArrayFrames):
    """A frame store directory (module docstring), its frames memory-mapped, read-only."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        missing = [name for name in (FRAMES, LABELS, INDEX) if not (self.path / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{self.path} is not a frame store (no {', '.join(missing)}):"
                                    " write one with write_frame_store")
        index = json.loads((self.path / INDEX).read_text())
        shape = (int(index["num_frames"]), int(index["dim"]))
        super().__init__(np.memmap(self.path / FRAMES, dtype=index["dtype"], mode="r",
                                   shape=shape),
                         np.load(self.path / LABELS),
                         {u: (int(a), int(b)) for u, (a, b) in index["utterances"].items()})

    def rows(self, index: np.ndarray) -> np.ndarray:
        # A memory map reads fastest in file order; the rows go back in the asked order, so
        # the probe sees exactly the minibatch the in-memory table would give.
        order = np.argsort(index, kind="stable")
        out = np.empty((len(index), self.dim), dtype=np.float32)
        out[order] = self.frames[index[order]]
        return out


def stack_frames(utterances: Iterable[tuple[str, np.ndarray, np.ndarray]],
                 dtype: str = "float32") -> ArrayFrames:
    """``(utt, (T, D) features, (T,) labels)`` triples concatenated in memory."""
    _check_dtype(dtype)
    ids, frames, labels = [], [], []
    for utt, feats, labs in utterances:
        ids.append(utt)
        frames.append(np.asarray(feats, dtype=dtype))
        labels.append(np.asarray(labs, dtype=np.int64))
    if not ids:
        raise ValueError("no utterances to stack")
    return ArrayFrames(np.concatenate(frames), np.concatenate(labels), _ranges(ids, labels))


def write_frame_store(utterances: Iterable[tuple[str, np.ndarray, np.ndarray]],
                      path: str | Path, dtype: str = "float32") -> FrameStore:
    """Write ``(utt, (T, D) features, (T,) labels)`` triples to a frame store at ``path``.

    One utterance is held at a time (a lazy feature mapping stays lazy); the frames are
    appended to ``frames.bin`` and the index written last, so a store with an index is
    complete. ``dtype``: ``"float32"`` or ``"float16"`` (half the disk; the probe computes in
    float32 on the rows read back).
    """
    _check_dtype(dtype)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / INDEX).unlink(missing_ok=True)
    ids, labels, dim = [], [], None
    with open(path / FRAMES, "wb") as out:
        for utt, feats, labs in utterances:
            feats = np.ascontiguousarray(feats, dtype=dtype)
            if feats.ndim != 2 or (dim is not None and feats.shape[1] != dim):
                raise ValueError(f"features of {utt!r} have shape {feats.shape}; every "
                                 f"utterance needs (frames, {dim or 'dim'})")
            dim = feats.shape[1]
            out.write(feats.tobytes())
            ids.append(utt)
            labels.append(np.asarray(labs, dtype=np.int64))
    if not ids:
        raise ValueError("a frame store needs at least one utterance")
    np.save(path / LABELS, np.concatenate(labels))
    ranges = _ranges(ids, labels)
    tmp = path / f".{INDEX}.tmp"
    tmp.write_text(json.dumps({"dim": dim, "dtype": dtype, "num_frames": sum(map(len, labels)),
                               "utterances": ranges}) + "\n")
    os.replace(tmp, path / INDEX)
    return FrameStore(path)


def _ranges(ids: Sequence[str], labels: Sequence[np.ndarray]) -> dict[str, tuple[int, int]]:
    ends = np.cumsum([len(lab) for lab in labels]).tolist()
    return {u: (end - len(lab), end) for u, lab, end in zip(ids, labels, ends)}


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"frame dtype must be one of {DTYPES}, got {dtype!r}")


def row_moments(table: FrameTable, index: np.ndarray, chunk: int = 16384,
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation (float64) of the rows ``index``, in chunks.

    The same sums in the same order for every table, so an in-memory table and a store of the
    same rows standardise identically.
    """
    if len(index) == 0:
        raise ValueError("no rows to take moments of")
    index = np.sort(index)
    chunks = [index[start : start + chunk] for start in range(0, len(index), chunk)]
    mean = sum(table.rows(c).astype(np.float64).sum(axis=0) for c in chunks) / len(index)
    # two passes: a large offset would swamp the variance in E[x^2] - E[x]^2
    var = sum(np.square(table.rows(c) - mean).sum(axis=0) for c in chunks) / len(index)
    return mean, np.sqrt(var)
