"""Does a utility estimate predict downstream accuracy? Rank correlation with its uncertainty.

Spearman's rho between the estimates of a set of candidates and the probe accuracies of models
pretrained on them, with a two-sided permutation p-value (exact for a few candidates) and a
percentile bootstrap confidence interval that resamples the candidates. The estimator predicts
rho < 0: a lower estimate, a higher accuracy.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their average rank."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inverse]


def _check(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size < 3:
        raise ValueError(f"need two sequences of the same length >= 3, got {a.shape}, {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("spearman: the values must be finite")
    return a, b


def spearman(x: Sequence[float], y: Sequence[float], max_exact: int = 9,
             permutations: int = 100_000, seed: int = 0) -> tuple[float, float]:
    """Spearman's rho and its two-sided permutation p-value.

    The p-value is the share of permutations of ``y`` whose |rho| reaches the observed one:
    all ``n!`` of them for ``n <= max_exact``, else ``permutations`` random ones.
    """
    a, b = _check(x, y)
    ra, rb = _ranks(a) - (a.size + 1) / 2, _ranks(b) - (b.size + 1) / 2
    norm = math.sqrt(float((ra**2).sum() * (rb**2).sum()))
    if norm == 0:
        return float("nan"), float("nan")
    rho = float((ra * rb).sum() / norm)
    if a.size <= max_exact:
        shuffled = np.array(list(itertools.permutations(rb)))
    else:
        rng = np.random.default_rng(seed)
        shuffled = rng.permuted(np.tile(rb, (permutations, 1)), axis=1)
    null = np.abs(shuffled @ ra / norm)
    p = float(np.mean(null >= abs(rho) - 1e-12))
    return rho, p


def bootstrap_interval(x: Sequence[float], y: Sequence[float], level: float = 0.95,
                       resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of Spearman's rho: the pairs ``(x_i, y_i)`` resampled with
    replacement; resamples whose rho is undefined (all values tied) are left out."""
    a, b = _check(x, y)
    if not 0 < level < 1 or resamples < 10:
        raise ValueError(f"need 0 < level < 1 and resamples >= 10, got {level}, {resamples}")
    rng = np.random.default_rng(seed)
    rhos = []
    for _ in range(resamples):
        pick = rng.integers(0, a.size, a.size)
        ra, rb = _ranks(a[pick]), _ranks(b[pick])
        ra, rb = ra - ra.mean(), rb - rb.mean()
        norm = math.sqrt(float((ra**2).sum() * (rb**2).sum()))
        if norm > 0:
            rhos.append(float((ra * rb).sum() / norm))
    if not rhos:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(rhos, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class RankCorrelation:
    """Spearman's rho of estimates and accuracies, with its p-value, interval and size."""

    rho: float
    p: float
    low: float
    high: float
    n: int

    def describe(self) -> str:
        return (f"rho = {self.rho:+.3f} (95 % CI {self.low:+.2f} to {self.high:+.2f}), "
                f"permutation p = {self.p:.3g}, n = {self.n}")


def rank_correlation(estimates: Sequence[float], accuracies: Sequence[float],
                     seed: int = 0) -> RankCorrelation:
    """:func:`spearman` and :func:`bootstrap_interval` of the same pairs."""
    rho, p = spearman(estimates, accuracies, seed=seed)
    low, high = bootstrap_interval(estimates, accuracies, seed=seed)
    return RankCorrelation(rho, p, low, high, len(estimates))


@dataclass(frozen=True)
class ValidationPoint:
    """One pretraining run: its candidate's estimate, its probe accuracy (a share in [0, 1])."""

    estimate: float
    accuracy: float
    candidate: str
    seed: int
    control: bool = False


@dataclass(frozen=True)
class ValidationPanel:
    """The points of one estimator setting and task, with the untrained model's accuracy."""

    xlabel: str
    ylabel: str
    points: list[ValidationPoint]
    floor: float


def plot_validation(panels: Sequence[ValidationPanel], path: str | Path, columns: int = 2
                    ) -> Path | None:
    """Estimate vs accuracy (%), one point per run, markers by seed, controls in red, the
    floor dashed; a PNG at ``path``. Needs matplotlib (returns ``None`` without it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return None
    rows = max(1, -(-len(panels) // columns))
    fig, axes = plt.subplots(rows, columns, squeeze=False, figsize=(5.0 * columns, 4.0 * rows))
    seeds = sorted({p.seed for panel in panels for p in panel.points})
    for ax, panel in zip(axes.flat, panels):
        for p in panel.points:
            if not np.isfinite(p.estimate):
                continue
            ax.scatter(p.estimate, 100 * p.accuracy, marker="osD^v<>"[seeds.index(p.seed) % 7],
                       color="C3" if p.control else "C0")
            ax.annotate(p.candidate, (p.estimate, 100 * p.accuracy), fontsize=6)
        ax.axhline(100 * panel.floor, ls="--", color="grey", label="untrained")
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel + " (%)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
