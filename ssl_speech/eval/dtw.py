"""Path-averaged dynamic time warping between many pairs of feature sequences at once.

The ABX distance of Libri-light / ZeroSpeech 2021 (Kahn et al., "Libri-Light", ICASSP 2020;
Nguyen et al., "The Zero Resource Speech Benchmark 2021", 2020): frames are L2-normalised, two
frames are compared by their angle ``arccos(cos) / pi`` (0 for equal directions, 1 for opposite
ones), and two sequences by the cost of the best monotone alignment divided by the number of
cells on that alignment.

The alignment uses the three usual moves (down, right, diagonal). The path length is the one the
reference recovers by backtracking from the last cell, preferring at each cell the diagonal
predecessor, then the left one (same row), then the upper one, each on ties (``<=``). Carrying
that choice forward (length of a cell = 1 + length of its chosen predecessor) gives the same
length without a backtracking pass. Costs are accumulated in float32 as the reference does, so
ties resolve the same way.

Everything is vectorised over pairs: a batch of pairs is padded to its longest sequences and the
recursion runs over anti-diagonals, each one a strided view of the flattened cost matrix. Padding
never matters: a cell depends only on cells above and to its left, and each pair's answer is read
at its own last cell.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ssl_speech.signal.single_thread import single_thread


def normalize_frames(frames: Tensor) -> tuple[Tensor, Tensor]:
    """L2-normalise frames ``(F, D)`` in float32; returns ``(unit (F, D), zero (F,) bool)``.

    All-zero frames have no direction. As in the reference they are put at distance 1 from every
    other frame and at distance 0 from each other (see :func:`angular_distance`); ``zero`` marks
    them and their rows of ``unit`` are left at zero.
    """
    if frames.dim() != 2:
        raise ValueError(f"frames must be (F, D), got shape {tuple(frames.shape)}")
    frames = frames.float()
    norm2 = (frames**2).sum(dim=1, keepdim=True)
    zero = norm2.squeeze(1) == 0
    unit = frames / torch.sqrt(torch.where(norm2 == 0, torch.ones_like(norm2), norm2))
    return unit, zero


def angular_distance(
    a: Tensor, b: Tensor, zero_a: Tensor | None = None, zero_b: Tensor | None = None
) -> Tensor:
    """Frame-to-frame angular distances ``arccos(a . b) / pi`` in ``[0, 1]``.

    Args:
        a: unit frames ``(B, N, D)``.
        b: unit frames ``(B, M, D)``.
        zero_a, zero_b: optional ``(B, N)`` / ``(B, M)`` masks of all-zero frames: distance 1 to
            any non-zero frame, 0 between two zero frames.

    Returns:
        ``(B, N, M)`` float32.
    """
    cos = torch.bmm(a, b.transpose(1, 2)).clamp_(-1.0, 1.0)
    dist = torch.acos(cos) / math.pi
    if zero_a is not None and zero_b is not None and (zero_a.any() or zero_b.any()):
        za, zb = zero_a[:, :, None], zero_b[:, None, :]
        dist = torch.where(za | zb, (za ^ zb).to(dist.dtype), dist)
    return dist


def path_averaged_dtw(dist: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Best-path DTW cost divided by the path's length in cells, for each pair of a batch.

    Args:
        dist: frame distances ``(B, N, M)``; pair ``b`` uses ``dist[b, :rows[b], :cols[b]]``.
        rows: ``(B,)`` sequence lengths along dim 1, each in ``[1, N]`` (frames).
        cols: ``(B,)`` sequence lengths along dim 2, each in ``[1, M]`` (frames).

    Returns:
        ``(B,)`` float32 costs.
    """
    if dist.dim() != 3:
        raise ValueError(f"dist must be (B, N, M), got shape {tuple(dist.shape)}")
    B, N, M = dist.shape
    rows, cols = rows.to(dist.device).long(), cols.to(dist.device).long()
    if B and (int(rows.min()) < 1 or int(rows.max()) > N or int(cols.min()) < 1
              or int(cols.max()) > M):
        raise ValueError(f"lengths must lie in [1, {N}] x [1, {M}] for dist of shape "
                         f"{tuple(dist.shape)}")
    W = M + 1
    # Padded (N+1, M+1) grid flattened, pairs last so that every cell is a contiguous row of B
    # values: row 0 and column 0 are the +inf border, cell (0, 0) the zero start, so cell (i, j)
    # holds frame pair (i-1, j-1) and sits at flat index i*W + j.
    d = torch.zeros(N + 1, W, B, dtype=torch.float32, device=dist.device)
    d[1:, 1:] = dist.permute(1, 2, 0)
    d = d.view(-1, B)
    cost = torch.full_like(d, math.inf)
    cost[0] = 0.0
    length = torch.zeros((N + 1) * W, B, dtype=torch.int32, device=dist.device)
    for k in range(2, N + M + 1):  # anti-diagonal i + j = k
        i_lo, i_hi = max(1, k - M), min(N, k - 1)

        def diag(base: int, i_lo: int = i_lo, i_hi: int = i_hi) -> slice:
            # cells (i, k - i) and their neighbours sit at base + i*M for i in [i_lo, i_hi]
            return slice(base + i_lo * M, base + i_hi * M + 1, M)

        here, up, left, corner = diag(k), diag(k - W), diag(k - 1), diag(k - 1 - W)
        c_up, c_left, c_diag = cost[up], cost[left], cost[corner]
        take_diag = (c_diag <= c_left) & (c_diag <= c_up)
        take_left = ~take_diag & (c_left <= c_up)
        best = torch.where(take_diag, c_diag, torch.where(take_left, c_left, c_up))
        steps = torch.where(take_diag, length[corner],
                            torch.where(take_left, length[left], length[up]))
        cost[here] = d[here] + best
        length[here] = steps + 1
    last = rows * W + cols
    pair = torch.arange(B, device=dist.device)
    total, cells = cost[last, pair], length[last, pair]
    # the reference divides the float32 total in double precision, then stores float32
    return (total.double() / cells.double()).float()


def _batches(rows: np.ndarray, cols: np.ndarray, dim: int, max_cells: int,
             max_values: int) -> list[tuple[int, int]]:
    """Consecutive ``[start, end)`` runs of pairs that fit the memory budgets.

    A run of ``n`` pairs padded to ``R x C`` frames holds ``n R C`` grid cells and gathers
    ``n (R + C) dim`` feature values. ``rows`` must be sorted ascending, so ``R`` is the run's
    last row length; a single pair always forms a run.
    """
    out, start, total = [], 0, len(rows)
    while start < total:
        # rows and the running max of cols never decrease, so this bounds the run length
        first = int(rows[start]) * int(cols[start])
        window = max(1, min(total - start, max_cells // first,
                            max_values // ((int(rows[start]) + int(cols[start])) * dim)))
        r = rows[start : start + window].astype(np.int64)
        c = np.maximum.accumulate(cols[start : start + window].astype(np.int64))
        n = np.arange(1, window + 1)
        fits = np.nonzero((n * r * c <= max_cells) & (n * (r + c) * dim <= max_values))[0]
        end = start + (int(fits[-1]) + 1 if len(fits) else 1)
        out.append((start, end))
        start = end
    return out


def pairwise_dtw(
    frames: Tensor,
    zero: Tensor,
    starts: np.ndarray,
    lengths: np.ndarray,
    row_tokens: np.ndarray,
    col_tokens: np.ndarray,
    max_cells: int = 1 << 19,
    max_values: int = 1 << 23,
) -> np.ndarray:
    """Path-averaged angular DTW between token pairs of one flat frame table.

    On CPU the work runs on one thread: it is hundreds of small tensor operations per batch,
    and splitting each over threads costs more than it saves (tens of times more when other
    processes share the cores).

    Args:
        frames: unit frames of all tokens ``(F, D)`` (see :func:`normalize_frames`), on the
            device the work runs on.
        zero: ``(F,)`` all-zero frame mask, same device.
        starts, lengths: ``(T,)`` first frame and number of frames of each token.
        row_tokens, col_tokens: ``(P,)`` token indices; pair ``p`` aligns ``row_tokens[p]`` (the
            grid's rows) with ``col_tokens[p]`` (its columns). Orientation matters only for
            ties between equally good paths of different lengths.
        max_cells: padded DTW grid cells per batch: the recursion's working set, sized to stay
            in cache on CPU.
        max_values: gathered feature values per batch (bounds the distance step's memory).

    Returns:
        ``(P,)`` float32 distances.
    """
    P = len(row_tokens)
    out = np.empty(P, dtype=np.float32)
    if P == 0:
        return out
    device = frames.device
    n_rows, n_cols = lengths[row_tokens], lengths[col_tokens]
    # similar shapes side by side keep the padding small
    order = np.lexsort((n_cols, n_rows))
    zero = zero if bool(zero.any()) else None
    with single_thread(device):
        for lo, hi in _batches(n_rows[order], n_cols[order], frames.shape[1], max_cells,
                               max_values):
            idx = order[lo:hi]
            N, M = int(n_rows[idx].max()), int(n_cols[idx].max())
            r_idx = _frame_index(starts[row_tokens[idx]], n_rows[idx], N, device)
            c_idx = _frame_index(starts[col_tokens[idx]], n_cols[idx], M, device)
            za, zb = (zero[r_idx], zero[c_idx]) if zero is not None else (None, None)
            dist = angular_distance(frames[r_idx], frames[c_idx], za, zb)
            r_len = torch.from_numpy(n_rows[idx]).to(device)
            c_len = torch.from_numpy(n_cols[idx]).to(device)
            out[idx] = path_averaged_dtw(dist, r_len, c_len).cpu().numpy()
    return out


def _frame_index(starts: np.ndarray, lengths: np.ndarray, size: int,
                 device: torch.device) -> Tensor:
    """``(B, size)`` frame indices of each token, its last frame repeated as padding."""
    offset = np.minimum(np.arange(size)[None, :], lengths[:, None] - 1)
    return torch.from_numpy(starts[:, None] + offset).to(device)
