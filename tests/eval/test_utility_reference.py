"""The reference setting: its kernels equal a direct implementation of the documented formulas.

The formulas are those of docs/pseudo_label_utility.md ("The reference setting"), written here
again with loops and ``math.erf`` on small inputs, independently of the batched code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ssl_speech.eval.utility import REFERENCE, CorpusSignals, estimate_utilities, task_segments
from ssl_speech.eval.utility_hsic import hsic, rbf_kernel
from ssl_speech.eval.utility_reference import reference_downsample_segments
from ssl_speech.eval.utility_segments import Segments


def phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def direct_downsample(x: np.ndarray, points: int, ratio: float = 0.07,
                      slope: float = 0.1) -> np.ndarray:
    """``(n, F)`` frames to ``(points, F)`` with the documented centres, widths and weights."""
    n = x.shape[0]
    out = np.zeros((points, x.shape[1]))
    for p in range(points):
        centre = p * (n - 1) / (points - 1) if points > 1 else 0.0
        std = ratio * n + slope * min(p, points - 1 - p)
        w = np.array([phi((i + 1 - centre) / std) - phi((i - centre) / std) for i in range(n)])
        out[p] = (w / w.sum()) @ x
    return out


def direct_hsic(K: np.ndarray, L: np.ndarray) -> float:
    """``tr(K H L H) / (n - 1)^2`` with the reference's ``H_ij = [i == j] - 1 / n^2``."""
    n = K.shape[0]
    H = np.eye(n) - np.full((n, n), 1.0 / n**2)
    return float(np.trace(K @ H @ L @ H) / (n - 1) ** 2)


@pytest.mark.parametrize("points", [10, 30, 5, 1])
def test_downsampling_equals_the_formula(points):
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(60, 4)).astype(np.float32)
    segments = Segments(["u"], np.zeros(3, int), np.array([0, 20, 41]), np.array([20, 23, 60]),
                        np.zeros(3, int))
    out = reference_downsample_segments({"u": frames}, segments, points)
    assert out.shape == (3, points, 4)
    for s in range(3):
        expected = direct_downsample(frames[segments.start[s] : segments.end[s]], points)
        assert out[s].numpy() == pytest.approx(expected, abs=1e-5)


def test_label_kernel_and_centring_equal_the_formulas():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(9, 1))
    L = rbf_kernel(torch.from_numpy(z), 0.05, per_dimension=False).numpy()
    assert np.allclose(L, np.exp(-((z - z.T) ** 2) / (2 * 0.05)), rtol=0, atol=1e-12)
    x = rng.normal(size=(9, 6))
    K = (x @ x.T) / np.outer(np.linalg.norm(x, axis=1), np.linalg.norm(x, axis=1))
    got = hsic(torch.from_numpy(K), torch.from_numpy(L), centring="reference").item()
    assert got == pytest.approx(direct_hsic(K, L), rel=1e-10)
    # and it is not the textbook value: H = I - 11^T / n^2 does not remove the means
    assert hsic(torch.from_numpy(K), torch.from_numpy(L)).item() != pytest.approx(got, rel=1e-3)


def test_the_reference_estimate_equals_the_formulas_end_to_end():
    """Phone classes of two utterances: raw log-mel, downsampled, cosine ``K``; the label
    z-scored over all frames, averaged per segment, ``exp(-dz^2 / 0.1)``; reference centring;
    the mean over classes."""
    rng = np.random.default_rng(2)
    log_mel = {u: rng.normal(size=(n, 5)).astype(np.float32) - 8.0
               for u, n in (("a", 70), ("b", 55))}
    label = {u: rng.gamma(2.0, 50.0, size=len(v)).astype(np.float32) for u, v in log_mel.items()}
    phones = {u: np.repeat(np.arange(len(v) // 5) % 3, 5)[: len(v)] for u, v in log_mel.items()}
    features = CorpusSignals(log_mel, {"z": label}, {"a": "s1", "b": "s1"})
    segments = task_segments(features, "phone", phones)
    got = {e.name: e for e in estimate_utilities(features, segments, "phone", REFERENCE,
                                                 controls=False)}["z"]

    frames = np.concatenate([label["a"], label["b"]]).astype(np.float64)
    mean, std = frames.mean(), frames.std()
    values = []
    for c in range(3):
        rows = [s for s in range(len(segments)) if segments.label[s] == c]
        xs, zs = [], []
        for s in rows:
            u = segments.utts[segments.utt_index[s]]
            a, b = segments.start[s], segments.end[s]
            xs.append(direct_downsample(log_mel[u][a:b].astype(np.float64), 10).ravel())
            zs.append(((label[u][a:b] - mean) / std).mean())
        x, z = np.array(xs), np.array(zs)[:, None]
        K = (x @ x.T) / np.outer(np.linalg.norm(x, axis=1), np.linalg.norm(x, axis=1))
        L = np.exp(-((z - z.T) ** 2) / (2 * 0.05))
        values.append(direct_hsic(K, L))
    assert got.uniform == pytest.approx(np.mean(values), rel=1e-5)
