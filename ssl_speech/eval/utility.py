"""Pseudo-label utility: how useful a pretext target is for a downstream task, without training.

Zaiem, Parcollet and Essid, "Conditional independence for pretext task selection in
self-supervised speech representation learning" (Interspeech 2021), and "Pretext tasks
selection for multitask self-supervised speech representation learning" (their section 3):
a pseudo-label ``Z`` computed from the input ``X`` helps a downstream task with label ``Y``
when ``X`` and ``Z`` are nearly independent given ``Y``, i.e. when ``Z`` carries little about
``X`` beyond ``Y``. The estimate is the Hilbert-Schmidt independence criterion (HSIC) of ``X``
and ``Z`` within each class ``y``, averaged over classes. Lower means more useful.

For each class ``y`` (a phone, with segments the contiguous runs of that phone in the
alignments; or a speaker, with segments utterances or fixed chunks of them):

- ``K``: cosine kernel between the segments' log-mel frames, each segment resampled to a fixed
  number of points by Gaussian-weighted averaging (:func:`downsample_segments`), log-mel bands
  standardised over the data set first (so the cosine sees spectral shape, not the large
  negative offset of log energies);
- ``L``: RBF kernel between the segments' NaN-aware means of ``Z``, z-scored over the data set,
  with a fixed variance per dimension (default 1 in z units) or the median heuristic;
- ``HSIC_y = tr(K H L H) / (n - 1)^2`` with the textbook centring ``H = I - 11^T / n``.

The class scores are averaged uniformly and weighted by the classes' segment counts; both are
reported. What our version changes: classes are capped at ``max_per_class`` segments (a seeded
subsample chosen from the segments' identities, so the result does not depend on their order),
classes with fewer than ``min_class_size`` usable segments are skipped and counted, segments
where ``Z`` is undefined throughout (all NaN, e.g. F0 of an unvoiced phone) are dropped and
counted, and all classes are scored together on torch: padded to a common size with a mask,
in chunks that bound memory. The reference code centres with ``1/n^2`` where ``H`` has
``1/n``; we use the textbook ``H``.
"""

from __future__ import annotations

import csv
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from ssl_speech.data.audio import read_audio
from ssl_speech.data.corpus import Utterance
from ssl_speech.signal.baseline_features import log_mel_features
from ssl_speech.signal.pseudo_labels import check_names, extract_pseudo_labels

IGNORE_INDEX = -100
TASKS = ("phone", "speaker")
NUM_POINTS = 10  # points per resampled segment, as the reference implementation
VARIANCE = 1.0  # RBF variance per z-scored dimension


# --------------------------------------------------------------------------------------------
# Segments
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Segment-level inputs and targets
# --------------------------------------------------------------------------------------------


def _flat_frames(values: Mapping[str, np.ndarray | Tensor], segments: Segments
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
    rows, which, position = _flat_frames(features, segments)
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
    rows, which, _ = _flat_frames(values, segments)
    finite = rows.isfinite()
    total = torch.zeros(len(segments), rows.shape[1]).index_add_(
        0, which, torch.where(finite, rows, torch.zeros_like(rows)))
    count = torch.zeros(len(segments), rows.shape[1]).index_add_(0, which, finite.float())
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


# --------------------------------------------------------------------------------------------
# Kernels and HSIC, batched over classes
# --------------------------------------------------------------------------------------------


def cosine_kernel(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """``K_ij = cos(x_i, x_j)``: ``(..., n, F) -> (..., n, n)``; masked rows and columns 0."""
    x = torch.nn.functional.normalize(x, dim=-1)
    if mask is not None:
        x = x * mask[..., None]
    return x @ x.mT


def _squared_distances(z: Tensor) -> Tensor:
    sq = z.pow(2).sum(-1)
    return (sq[..., :, None] + sq[..., None, :] - 2.0 * z @ z.mT).clamp_min(0.0)


def rbf_kernel(z: Tensor, variance: float | str = VARIANCE, mask: Tensor | None = None) -> Tensor:
    """``L_ij = exp(-|z_i - z_j|^2 / (2 h))``: ``(..., n, D) -> (..., n, n)``.

    ``variance`` a number: ``h = variance * D`` (a fixed variance per dimension).
    ``variance="median"``: ``h`` = the median squared distance between distinct valid rows of
    each matrix (the median heuristic; 1 where all rows coincide). Masked rows and columns 0.
    """
    d2 = _squared_distances(z)
    n = z.shape[-2]
    if mask is None:
        mask = torch.ones(z.shape[:-1], dtype=torch.bool, device=z.device)
    pair = mask[..., :, None] & mask[..., None, :]
    if variance == "median":
        off = pair & ~torch.eye(n, dtype=torch.bool, device=z.device)
        h = torch.where(off, d2, torch.full_like(d2, float("nan"))).flatten(-2).nanmedian(-1)[0]
        h = torch.where(h.isfinite() & (h > 0), h, torch.ones_like(h))[..., None, None]
    elif isinstance(variance, (int, float)) and variance > 0:
        h = float(variance) * z.shape[-1]
    else:
        raise ValueError(f"variance must be a positive number or 'median', got {variance!r}")
    return torch.exp(-d2 / (2.0 * h)) * pair


def centre_kernel(K: Tensor, mask: Tensor | None = None) -> Tensor:
    """``H K H`` with ``H = I - 11^T / n`` over the valid rows (``mask`` ``(..., n)``) of each
    ``(..., n, n)`` matrix; masked rows and columns stay 0."""
    if mask is None:
        mask = torch.ones(K.shape[:-1], dtype=torch.bool, device=K.device)
    m = mask.to(K.dtype)
    n = m.sum(-1).clamp_min(1.0)[..., None]
    row = (K * m[..., None, :]).sum(-1) / n  # (..., n): mean over valid columns
    total = (row * m).sum(-1, keepdim=True) / n
    centred = K - row[..., :, None] - row[..., None, :] + total[..., None]
    return centred * (m[..., :, None] * m[..., None, :])


def hsic(K: Tensor, L: Tensor, mask: Tensor | None = None) -> Tensor:
    """``tr(K H L H) / (n - 1)^2`` per matrix: ``(..., n, n)`` pairs -> ``(...)``.

    ``n`` is the number of valid rows; ``K`` and ``L`` must be zero outside them. Since ``H`` is
    idempotent, ``tr(K H L H) = sum_ij (H K H)_ij L_ij``.
    """
    n = K.shape[-1] if mask is None else mask.sum(-1).to(K.dtype)
    n = torch.as_tensor(n, dtype=K.dtype, device=K.device)
    return (centre_kernel(K, mask) * L).sum((-2, -1)) / (n - 1.0).clamp_min(1.0) ** 2


# --------------------------------------------------------------------------------------------
# The estimate
# --------------------------------------------------------------------------------------------


@dataclass
class UtilityEstimate:
    """Conditional dependence of ``X`` and ``Z`` given ``Y`` for one pseudo-label.

    Attributes:
        name: the pseudo-label.
        uniform: mean over the scored classes of their HSIC (lower: more useful).
        weighted: the same, weighted by each class's number of usable segments.
        per_class: ``{class: HSIC}`` of every scored class.
        class_sizes: ``{class: usable segments}`` (before the cap) of every scored class.
        num_segments: segments scored (after the cap).
        num_dropped: segments dropped because ``Z`` is undefined (NaN) throughout them.
        skipped_classes: classes with fewer than ``min_class_size`` usable segments.
        seconds: time the estimate took.
    """

    name: str
    uniform: float
    weighted: float
    per_class: dict[int, float] = field(default_factory=dict)
    class_sizes: dict[int, int] = field(default_factory=dict)
    num_segments: int = 0
    num_dropped: int = 0
    skipped_classes: list[int] = field(default_factory=list)
    seconds: float = 0.0


def _class_table(labels: Tensor, keys: Tensor, cap: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Classes ``(C,)``, their sizes, and per class the row indices ``(C, n)`` of at most
    ``cap`` segments (the smallest keys) with a validity mask, classes by decreasing size."""
    classes, sizes = labels.unique(return_counts=True)
    order = torch.argsort(keys, stable=True)
    order = order[torch.argsort(labels[order], stable=True)]  # by class, then by key
    starts = torch.cumsum(sizes, 0) - sizes
    rank = torch.argsort(sizes, descending=True, stable=True)
    classes, sizes, starts = classes[rank], sizes[rank], starts[rank]
    width = min(int(sizes.max()), cap)
    position = torch.arange(width)
    mask = position[None] < sizes.clamp_max(cap)[:, None]
    index = order[(starts[:, None] + position[None]).clamp_max(labels.numel() - 1)]
    return classes, sizes, torch.where(mask, index, torch.zeros_like(index)), mask


def conditional_dependence(
    inputs: Tensor,
    targets: Tensor,
    labels: Tensor,
    keys: Tensor | None = None,
    *,
    name: str = "",
    max_per_class: int = 500,
    min_class_size: int = 4,
    variance: float | str = VARIANCE,
    seed: int = 0,
    device: str | torch.device = "cpu",
    max_elements: int = 1 << 24,
) -> UtilityEstimate:
    """HSIC of inputs and targets within each class, averaged over classes.

    Args:
        inputs: ``(S, F)`` or ``(S, P, F)`` segment inputs ``X`` (e.g. resampled log-mel).
        targets: ``(S,)`` or ``(S, D)`` segment pseudo-labels ``Z`` (e.g. segment means); rows
            with a NaN are dropped and counted; the rest are z-scored per dimension.
        labels: ``(S,)`` integer classes ``Y``.
        keys: ``(S,)`` integer keys that choose the segments kept in a class larger than
            ``max_per_class`` (smallest first); default: a seeded random draw in input order.
            Pass :meth:`Segments.keys` to make the result independent of the segments' order.
        max_per_class: cap on the segments scored per class (cost grows with its square).
        min_class_size: classes with fewer usable segments are skipped.
        variance: RBF variance per z-scored dimension, or ``"median"``.
        device: where the kernels are computed.
        max_elements: bound on the kernel entries held at once (classes are done in chunks).
    """
    began = time.perf_counter()
    if max_per_class < 2 or min_class_size < 2:
        raise ValueError(f"need max_per_class >= 2 and min_class_size >= 2, got "
                         f"{max_per_class} and {min_class_size}")
    x = inputs.flatten(1) if inputs.dim() > 2 else inputs
    z = targets[:, None] if targets.dim() == 1 else targets
    labels = torch.as_tensor(labels).long()
    if not (x.shape[0] == z.shape[0] == labels.shape[0]):
        raise ValueError(f"inputs, targets and labels disagree on the number of segments: "
                         f"{x.shape[0]}, {z.shape[0]}, {labels.shape[0]}")
    if keys is None:
        keys = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(seed))
    keys = torch.as_tensor(keys).long()
    usable = z.isfinite().all(-1)
    num_dropped = int((~usable).sum())
    if not bool(usable.any()):
        return UtilityEstimate(name, float("nan"), float("nan"), num_dropped=num_dropped,
                               skipped_classes=sorted(int(c) for c in labels.unique()),
                               seconds=time.perf_counter() - began)
    x, z, labels, keys = x[usable], z[usable].double(), labels[usable], keys[usable]
    var, mean = torch.var_mean(z, dim=0, correction=0)
    z = ((z - mean) / var.sqrt().clamp_min(1e-12)).float()

    classes, sizes, index, mask = _class_table(labels, keys, max_per_class)
    scored = sizes >= min_class_size
    skipped = sorted(int(c) for c in classes[~scored])
    classes, sizes, index, mask = classes[scored], sizes[scored], index[scored], mask[scored]
    values = torch.zeros(classes.shape[0], dtype=torch.float64)
    first = 0
    while first < classes.shape[0]:  # chunks of classes, largest first, padded to the largest
        width = int(mask[first].sum())
        count = max(1, max_elements // max(width * width, 1))
        chunk = slice(first, first + count)
        m = mask[chunk, :width].to(device)
        rows = index[chunk, :width]
        K = cosine_kernel(x[rows].to(device).float(), m)
        L = rbf_kernel(z[rows].to(device), variance, m)
        values[chunk] = hsic(K.double(), L.double(), m).cpu()
        first += count
    weights = sizes.double()
    uniform = float(values.mean()) if values.numel() else float("nan")
    weighted = float((values * weights).sum() / weights.sum()) if values.numel() else float("nan")
    return UtilityEstimate(
        name=name, uniform=uniform, weighted=weighted,
        per_class={int(c): float(v) for c, v in zip(classes, values)},
        class_sizes={int(c): int(s) for c, s in zip(classes, sizes)},
        num_segments=int(mask.sum()), num_dropped=num_dropped, skipped_classes=skipped,
        seconds=time.perf_counter() - began,
    )


# --------------------------------------------------------------------------------------------
# A corpus, a task and candidates
# --------------------------------------------------------------------------------------------


def _trimmed(labels: np.ndarray, frames: int, utt: str, tolerance: int = 2) -> np.ndarray:
    if abs(labels.shape[0] - frames) > tolerance:
        raise ValueError(
            f"{utt!r}: {labels.shape[0]} label frames but {frames} feature frames (10 ms); the "
            "alignments do not belong to this audio"
        )
    return labels[:frames]


def rank_pseudo_labels(
    utterances: Sequence[Utterance],
    candidates: Sequence[str],
    task: str = "phone",
    alignments: Mapping[str, np.ndarray] | None = None,
    speakers: Mapping[str, int] | None = None,
    chunk_frames: int | None = 200,
    num_points: int = NUM_POINTS,
    max_per_class: int = 500,
    min_class_size: int = 4,
    variance: float | str = VARIANCE,
    seed: int = 0,
    device: str | torch.device = "cpu",
    read: Callable[[Utterance], np.ndarray] | None = None,
    progress: bool = False,
) -> list[UtilityEstimate]:
    """Estimate every candidate's utility for ``task`` on ``utterances``, best first.

    Args:
        utterances: the audio (``Utterance`` s of a corpus).
        candidates: pseudo-label names (see :mod:`ssl_speech.signal.pseudo_labels`).
        task: ``"phone"`` (classes from ``alignments``, segments = runs of one phone) or
            ``"speaker"`` (classes from ``speakers`` or the utterances' speaker names,
            segments = chunks of ``chunk_frames`` frames, or whole utterances with ``None``).
        read: ``utterance -> (S,) float32 waveform`` (default: read the file at 16 kHz).
        Others: see :func:`conditional_dependence` and :func:`downsample_segments`.

    Returns:
        One :class:`UtilityEstimate` per candidate, sorted by ``uniform`` (most useful first).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "phone" and alignments is None:
        raise ValueError("task='phone' needs alignments (frame labels per utterance)")
    candidates = check_names(candidates)
    read = read or (lambda u: read_audio(u.path))
    log_mel: dict[str, np.ndarray] = {}
    labels: dict[str, dict[str, np.ndarray]] = {name: {} for name in candidates}
    for utt in tqdm(utterances, desc="pseudo-labels", disable=not progress):
        wav = read(utt)
        log_mel[utt.id] = log_mel_features(wav)
        for name, value in extract_pseudo_labels(candidates, wav).items():
            labels[name][utt.id] = value.cpu().numpy()
    frames = {u: f.shape[0] for u, f in log_mel.items()}
    if task == "phone":
        assert alignments is not None
        missing = [u for u in frames if u not in alignments]
        if missing:
            raise KeyError(f"{len(missing)} utterances have no alignment, e.g. {missing[:3]}")
        aligned = {u: _trimmed(np.asarray(alignments[u]), frames[u], u) for u in frames}
        segments = phone_segments(aligned)
    else:
        names = sorted({u.speaker for u in utterances})
        index = speakers or {u.id: names.index(u.speaker) for u in utterances}
        segments = speaker_segments(frames, index, chunk_frames)
    inputs = downsample_segments(log_mel, segments, num_points)
    keys = torch.from_numpy(segments.keys(seed))
    results = [
        conditional_dependence(
            inputs, segment_means(labels[name], segments), torch.from_numpy(segments.label),
            keys, name=name, max_per_class=max_per_class, min_class_size=min_class_size,
            variance=variance, seed=seed, device=device,
        )
        for name in candidates
    ]
    return sorted(results, key=lambda r: (np.isnan(r.uniform), r.uniform))


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------

_COLUMNS = ("rank", "pseudo_label", "hsic_uniform", "hsic_weighted", "classes",
            "skipped_classes", "segments", "dropped_segments")


def table_rows(estimates: Sequence[UtilityEstimate]) -> list[dict[str, object]]:
    """One dict per estimate, in the given order, with the columns of the written table."""
    return [
        {"rank": i + 1, "pseudo_label": e.name, "hsic_uniform": e.uniform,
         "hsic_weighted": e.weighted, "classes": len(e.per_class),
         "skipped_classes": len(e.skipped_classes), "segments": e.num_segments,
         "dropped_segments": e.num_dropped}
        for i, e in enumerate(estimates)
    ]


def format_table(estimates: Sequence[UtilityEstimate]) -> str:
    """A Markdown table of the estimates (lower HSIC: more useful)."""
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for row in table_rows(estimates):
        cells = [f"{v:.5g}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_table(estimates: Sequence[UtilityEstimate], path: str | Path) -> Path:
    """Write the estimates as a tab-separated table with a header line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=_COLUMNS, delimiter="\t")
        writer.writeheader()
        writer.writerows(table_rows(estimates))
    return path


def plot_estimates(estimates: Sequence[UtilityEstimate], path: str | Path, title: str = ""
                   ) -> Path | None:
    """A bar plot PNG of both averages; needs matplotlib (returns ``None`` without it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [e.name for e in estimates]
    at = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(names) + 2.0), 3.5))
    ax.bar(at - 0.2, [e.uniform for e in estimates], 0.4, label="uniform over classes")
    ax.bar(at + 0.2, [e.weighted for e in estimates], 0.4, label="weighted by class size")
    ax.set_xticks(at, names, rotation=45, ha="right")
    ax.set_ylabel("conditional HSIC (lower: more useful)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
