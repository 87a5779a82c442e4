"""Rank correlation of estimates and accuracies: rho, its exact p-value, its bootstrap interval."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_speech.eval.utility_validation import (
    ValidationPanel,
    ValidationPoint,
    bootstrap_interval,
    plot_validation,
    rank_correlation,
    spearman,
)


def test_spearman_rank_correlation_and_its_exact_p_value():
    rho, p = spearman([1, 2, 3, 4, 5, 6], [0.9, 0.8, 0.5, 0.4, 0.2, 0.1])
    assert rho == pytest.approx(-1.0) and p == pytest.approx(2 / 720)  # both extreme orders
    rho, p = spearman([1, 2, 3, 4], [1, 3, 2, 4])
    assert rho == pytest.approx(0.8) and p == pytest.approx(8 / 24)
    rho, _ = spearman([1, 2, 2, 3], [1, 2, 3, 4])  # ties take their average rank
    assert rho == pytest.approx(np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1])
    with pytest.raises(ValueError, match="length"):
        spearman([1, 2], [1, 2])


def test_spearman_matches_scipy_and_samples_the_null_beyond_nine():
    scipy_stats = pytest.importorskip("scipy.stats")
    x, y = np.random.default_rng(0).normal(size=(2, 12))
    rho, p = spearman(x, y)
    assert rho == pytest.approx(scipy_stats.spearmanr(x, y)[0])
    assert p == pytest.approx(scipy_stats.permutation_test(
        (x,), lambda a: scipy_stats.spearmanr(a, y)[0], permutation_type="pairings",
        n_resamples=20000, random_state=0).pvalue, abs=0.02)


def test_the_bootstrap_interval_holds_rho_and_narrows_with_more_pairs():
    rng = np.random.default_rng(1)
    x = rng.normal(size=200)
    y = -x + 0.5 * rng.normal(size=200)
    low, high = bootstrap_interval(x, y)
    rho, _ = spearman(x, y)
    assert low < rho < high < 0
    small_low, small_high = bootstrap_interval(x[:10], y[:10])
    assert small_high - small_low > high - low
    # a perfect monotone relation: every resample gives -1 (or is undefined and left out)
    assert bootstrap_interval([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == (-1.0, -1.0)
    result = rank_correlation(x[:8], y[:8])
    assert result.n == 8 and result.low <= result.rho <= result.high
    assert "rho = " in result.describe() and "p = " in result.describe()


def test_the_validation_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    points = [ValidationPoint(0.1, 0.5, "rms", 0), ValidationPoint(0.2, 0.4, "rms", 1),
              ValidationPoint(0.0, 0.3, "class_function", 0, control=True)]
    panel = ValidationPanel("estimate", "phone probe accuracy", points, 0.35)
    path = plot_validation([panel, panel], tmp_path / "v.png")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
