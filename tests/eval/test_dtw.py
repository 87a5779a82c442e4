"""Path-averaged DTW: brute force over all monotone paths, plain DP, batching, angular distance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ssl_speech.eval.dtw import (
    angular_distance,
    normalize_frames,
    pairwise_dtw,
    path_averaged_dtw,
)


def _all_paths(n: int, m: int):
    """Every monotone path from (0, 0) to (n-1, m-1) with moves down, right, diagonal."""
    if n == 1 and m == 1:
        yield [(0, 0)]
        return
    for di, dj in ((1, 0), (0, 1), (1, 1)):
        if n - di >= 1 and m - dj >= 1:
            for path in _all_paths(n - di, m - dj):
                yield [*path, (n - 1, m - 1)]


def _brute_force(d: np.ndarray) -> tuple[float, set[int]]:
    """Minimum path cost and the lengths (in cells) of all paths reaching it."""
    costs = [(sum(float(d[i, j]) for i, j in p), len(p)) for p in _all_paths(*d.shape)]
    best = min(c for c, _ in costs)
    return best, {n for c, n in costs if math.isclose(c, best, rel_tol=1e-9, abs_tol=1e-12)}


def _plain_dp(d: np.ndarray) -> float:
    """Double-loop DP with the reference's backtracking (diagonal, then left, then up)."""
    n, m = d.shape
    cost = np.zeros((n, m), dtype=np.float32)
    for i in range(n):
        for j in range(m):
            prev = [cost[i - 1, j]] if i else []
            prev += [cost[i, j - 1]] if j else []
            prev += [cost[i - 1, j - 1]] if i and j else []
            cost[i, j] = d[i, j] + (min(prev) if prev else np.float32(0))
    i, j, cells = n - 1, m - 1, 1
    while i > 0 and j > 0:
        up, left, diag = cost[i - 1, j], cost[i, j - 1], cost[i - 1, j - 1]
        if diag <= left and diag <= up:
            i, j = i - 1, j - 1
        elif left <= up:
            j -= 1
        else:
            i -= 1
        cells += 1
    cells += i + j
    return float(np.float32(float(cost[n - 1, m - 1]) / cells))


def test_matches_brute_force_on_unequal_lengths():
    rng = np.random.default_rng(0)
    shapes = [(1, 1), (1, 4), (4, 1), (2, 3), (3, 2), (4, 4), (5, 3), (3, 6)]
    dists, rows, cols = [], [], []
    for n, m in shapes:
        dists.append(rng.random((n, m)).astype(np.float32))
        rows.append(n), cols.append(m)
    padded = np.zeros((len(shapes), 5, 6), dtype=np.float32) + 9.0  # padding must not matter
    for b, d in enumerate(dists):
        padded[b, : d.shape[0], : d.shape[1]] = d
    out = path_averaged_dtw(torch.from_numpy(padded), torch.tensor(rows), torch.tensor(cols))
    for b, d in enumerate(dists):
        best, lengths = _brute_force(d)
        assert len(lengths) == 1  # continuous random costs: one optimal path
        assert out[b].item() == pytest.approx(best / lengths.pop(), rel=1e-6)


def test_ties_resolve_like_the_reference_backtracking():
    # Quantised costs give many equally good paths of different lengths: the length must be the
    # one the reference's backtracking picks, and the result one of the brute-force optima.
    rng = np.random.default_rng(1)
    B, N, M = 300, 5, 6
    d = (rng.integers(0, 3, size=(B, N, M)) / 2).astype(np.float32)
    rows, cols = rng.integers(1, N + 1, B), rng.integers(1, M + 1, B)
    out = path_averaged_dtw(torch.from_numpy(d), torch.from_numpy(rows), torch.from_numpy(cols))
    several = 0
    for b in range(B):
        sub = d[b, : rows[b], : cols[b]]
        assert out[b].item() == _plain_dp(sub)
        best, lengths = _brute_force(sub)
        several += len(lengths) > 1
        assert any(out[b].item() == pytest.approx(best / n, abs=1e-6) for n in lengths)
    assert several > 30  # the test does exercise ties


def test_identical_sequences_cost_zero_and_constant_costs_average_to_the_constant():
    d = torch.full((1, 7, 4), 0.3)
    assert path_averaged_dtw(d, torch.tensor([7]), torch.tensor([4])).item() == pytest.approx(0.3)
    x, _ = normalize_frames(torch.randn(6, 8))
    dist = angular_distance(x[None], x[None])
    assert path_averaged_dtw(dist, torch.tensor([6]), torch.tensor([6])).item() < 1e-3


def test_rejects_lengths_outside_the_grid():
    with pytest.raises(ValueError, match="lengths must lie"):
        path_averaged_dtw(torch.zeros(1, 3, 3), torch.tensor([4]), torch.tensor([1]))
    with pytest.raises(ValueError, match="lengths must lie"):
        path_averaged_dtw(torch.zeros(1, 3, 3), torch.tensor([0]), torch.tensor([1]))


def test_angular_distance_properties():
    g = torch.Generator().manual_seed(0)
    a, _ = normalize_frames(torch.randn(20, 5, generator=g) * 7.0)
    b, _ = normalize_frames(torch.randn(30, 5, generator=g))
    d = angular_distance(a[None], b[None])[0]
    assert d.shape == (20, 30)
    assert bool((d >= 0).all()) and bool((d <= 1).all())
    assert torch.allclose(d, angular_distance(b[None], a[None])[0].T)  # symmetric
    assert torch.allclose(angular_distance(a[None], a[None])[0].diagonal(), torch.zeros(20),
                          atol=1e-3)
    assert angular_distance(a[None, :1], -a[None, :1]).item() == pytest.approx(1.0)
    e = torch.eye(5)[None]
    assert torch.allclose(angular_distance(e, e)[0], 0.5 * (1 - torch.eye(5)), atol=1e-6)
    # scale invariance: only directions count
    a3, _ = normalize_frames(torch.randn(4, 5, generator=g))
    a3_scaled, _ = normalize_frames(a3 * 1e3)
    assert torch.allclose(angular_distance(a3[None], b[None]),
                          angular_distance(a3_scaled[None], b[None]), atol=1e-5)
    # triangle inequality (the angle is a metric on the sphere)
    c, _ = normalize_frames(torch.randn(10, 5, generator=g))
    dab = angular_distance(a[None, :10], b[None, :10])[0].diagonal()
    dbc = angular_distance(b[None, :10], c[None])[0].diagonal()
    dac = angular_distance(a[None, :10], c[None])[0].diagonal()
    assert bool((dac <= dab + dbc + 1e-5).all())


def test_zero_frames_are_far_from_everything_but_each_other():
    unit, zero = normalize_frames(torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]]))
    assert zero.tolist() == [True, False, True]
    assert torch.allclose(unit[1], torch.tensor([0.6, 0.8]))
    d = angular_distance(unit[None], unit[None], zero[None], zero[None])[0]
    assert torch.allclose(d, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]),
                          atol=1e-3)


def test_pairwise_dtw_matches_one_pair_at_a_time_across_batches():
    rng = np.random.default_rng(2)
    lengths = rng.integers(1, 12, size=40)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    unit, zero = normalize_frames(torch.from_numpy(rng.normal(size=(lengths.sum(), 6))))
    rows, cols = rng.integers(0, 40, 200), rng.integers(0, 40, 200)
    # a tiny budget forces many batches, and single-pair batches
    out = pairwise_dtw(unit, zero, starts, lengths, rows, cols, max_cells=300, max_values=2000)
    for p in range(0, 200, 7):
        r = unit[starts[rows[p]] : starts[rows[p]] + lengths[rows[p]]]
        c = unit[starts[cols[p]] : starts[cols[p]] + lengths[cols[p]]]
        d = angular_distance(r[None], c[None])[0].numpy()
        assert out[p] == pytest.approx(_plain_dp(d), abs=1e-6)
    assert pairwise_dtw(unit, zero, starts, lengths, rows[:0], cols[:0]).shape == (0,)
