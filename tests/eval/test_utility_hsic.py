"""Kernels, HSIC and the conditional dependence estimate, and what the estimate means."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_speech.eval.utility_hsic import (
    centre_kernel,
    conditional_dependence,
    cosine_kernel,
    hsic,
    rbf_kernel,
)


def synthetic_segments(num_classes: int = 6, per_class: int = 40, dim: int = 12, seed: int = 0):
    """Segment inputs ``X`` = class prototype + a within-class factor ``u`` + noise; returns
    ``(x (S, dim), labels (S,), u (S,))``."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(num_classes, dim, generator=g) * 3.0
    direction = torch.randn(dim, generator=g)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    u = torch.randn(labels.shape[0], generator=g)
    x = prototypes[labels] + u[:, None] * direction + 0.3 * torch.randn(labels.shape[0], dim,
                                                                         generator=g)
    return x, labels, u


def naive_hsic(K: np.ndarray, L: np.ndarray) -> float:
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(K @ H @ L @ H) / (n - 1) ** 2)


@pytest.mark.parametrize("variance", [1.0, 0.05, "median"])
def test_kernels_are_positive_semidefinite(variance):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 30, 8, generator=g, dtype=torch.float64)
    z = torch.randn(3, 30, 2, generator=g, dtype=torch.float64)
    for kernel in (cosine_kernel(x), rbf_kernel(z, variance)):
        assert torch.allclose(kernel, kernel.mT)
        assert torch.linalg.eigvalsh(kernel).min() > -1e-9
        assert torch.linalg.eigvalsh(centre_kernel(kernel)).min() > -1e-9
    assert torch.allclose(torch.diagonal(cosine_kernel(x), dim1=-2, dim2=-1),
                          torch.ones(3, 30, dtype=torch.float64))


def test_batched_masked_hsic_equals_the_textbook_formula():
    g = torch.Generator().manual_seed(2)
    sizes = [7, 12, 4]
    width = max(sizes)
    x = torch.randn(3, width, 5, generator=g, dtype=torch.float64)
    z = torch.randn(3, width, 1, generator=g, dtype=torch.float64)
    mask = torch.arange(width)[None] < torch.tensor(sizes)[:, None]
    batched = hsic(cosine_kernel(x, mask), rbf_kernel(z, 1.0, mask), mask)
    for c, n in enumerate(sizes):
        K = cosine_kernel(x[c, :n]).numpy()
        L = rbf_kernel(z[c, :n], 1.0).numpy()
        assert batched[c].item() == pytest.approx(naive_hsic(K, L), rel=1e-10, abs=1e-14)
        # the median heuristic too: each matrix gets its own bandwidth
        median = hsic(cosine_kernel(x, mask), rbf_kernel(z, "median", mask), mask)[c]
        assert median.item() == pytest.approx(
            naive_hsic(K, rbf_kernel(z[c, :n], "median").numpy()), rel=1e-10, abs=1e-14)


def test_hsic_is_zero_for_a_constant_kernel_and_positive_for_dependence():
    x, _, u = synthetic_segments(num_classes=1, per_class=50)
    K = cosine_kernel(x.double())
    assert hsic(K, torch.ones(50, 50, dtype=torch.float64)).abs().item() < 1e-12
    dependent = hsic(K, rbf_kernel(u[:, None].double()))
    independent = hsic(K, rbf_kernel(torch.randn(50, 1, dtype=torch.float64,
                                                 generator=torch.Generator().manual_seed(9))))
    assert dependent > 5 * independent > 0


def test_bad_variance_is_rejected():
    with pytest.raises(ValueError, match="variance"):
        rbf_kernel(torch.randn(4, 1), variance=-1.0)
    with pytest.raises(ValueError, match="variance"):
        rbf_kernel(torch.randn(4, 1), variance="mean")


@pytest.mark.parametrize("variance", [1.0, "median"])
def test_a_function_of_the_class_is_at_the_minimum(variance):
    x, labels, u = synthetic_segments()
    of_class = conditional_dependence(x, (labels.float() * 2.5 - 4.0) ** 2, labels,
                                      variance=variance)
    noise = torch.randn(labels.shape[0], generator=torch.Generator().manual_seed(5))
    independent = conditional_dependence(x, noise, labels, variance=variance)
    informative = conditional_dependence(x, u, labels, variance=variance)
    # HSIC >= 0, and exactly 0 when Z is constant inside every class
    assert abs(of_class.uniform) < 1e-9 and abs(of_class.weighted) < 1e-9
    assert of_class.uniform < independent.uniform < informative.uniform
    assert informative.uniform > 5 * independent.uniform
    assert informative.weighted > 5 * independent.weighted


def test_more_information_beyond_the_class_means_a_larger_estimate():
    x, labels, u = synthetic_segments(per_class=60)
    noise = torch.randn(u.shape, generator=torch.Generator().manual_seed(3))
    estimates = [conditional_dependence(x, u + scale * noise, labels).uniform
                 for scale in (0.0, 1.0, 3.0, 100.0)]
    assert estimates == sorted(estimates, reverse=True)


def test_the_estimate_ignores_the_order_of_segments():
    x, labels, u = synthetic_segments(num_classes=5, per_class=30)
    keys = torch.arange(labels.shape[0]) * 7919 % 1009
    permutation = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(4))
    for cap in (500, 12):  # uncapped, and capped with identity keys choosing the subsample
        a = conditional_dependence(x, u, labels, keys, max_per_class=cap)
        b = conditional_dependence(x[permutation], u[permutation], labels[permutation],
                                   keys[permutation], max_per_class=cap)
        assert a.uniform == pytest.approx(b.uniform, rel=1e-9)
        assert a.weighted == pytest.approx(b.weighted, rel=1e-9)
        assert a.per_class == pytest.approx(b.per_class, rel=1e-9)
    # without keys the draw follows the input order, which only matters under a cap
    a = conditional_dependence(x, u, labels)
    b = conditional_dependence(x[permutation], u[permutation], labels[permutation])
    assert a.uniform == pytest.approx(b.uniform, rel=1e-9)


def test_undefined_targets_small_classes_and_the_cap_are_counted():
    x, labels, u = synthetic_segments(num_classes=4, per_class=30)
    z = u.clone()
    z[:10] = float("nan")  # 10 segments of class 0 undefined
    z[30:57] = float("nan")  # class 1 keeps 3 segments: too few
    result = conditional_dependence(x, z, labels, max_per_class=25, min_class_size=4)
    assert result.num_dropped == 37
    assert result.skipped_classes == [1]
    assert result.class_sizes == {0: 20, 2: 30, 3: 30}
    assert result.num_segments == 20 + 25 + 25
    weights = np.array([20, 30, 30])
    values = np.array([result.per_class[c] for c in (0, 2, 3)])
    assert result.uniform == pytest.approx(values.mean())
    assert result.weighted == pytest.approx((values * weights).sum() / weights.sum())


def test_classes_done_in_chunks_give_the_same_estimate():
    x, labels, u = synthetic_segments(num_classes=7, per_class=25)
    whole = conditional_dependence(x, u, labels)
    chunked = conditional_dependence(x, u, labels, max_elements=25 * 25)
    assert whole.per_class == pytest.approx(chunked.per_class, rel=1e-9)


def test_all_undefined_targets_give_nan_not_an_error():
    x, labels, _ = synthetic_segments(num_classes=2, per_class=5)
    result = conditional_dependence(x, torch.full((10,), float("nan")), labels)
    assert np.isnan(result.uniform) and result.num_dropped == 10
    with pytest.raises(ValueError, match="number of segments"):
        conditional_dependence(x, torch.zeros(9), labels)


def test_the_reference_centring_scores_a_class_function_at_the_mean_of_k():
    """With ``H = I - 11^T / n^2``, ``H 1 = (1 - 1/n) 1``: a label constant in the class
    (``L`` all ones) scores ``(1 - 1/n)^2 sum(K) / (n - 1)^2 = mean(K)`` instead of 0, above a
    label that varies with ``X``."""
    x, labels, u = synthetic_segments(num_classes=1, per_class=30)
    x = x.abs()  # K >= 0 entrywise, as cosine kernels of log-mel segments are
    K = cosine_kernel(x.double())
    ones = torch.ones(30, 30, dtype=torch.float64)
    assert hsic(K, ones, centring="reference").item() == pytest.approx(K.mean().item())
    assert abs(hsic(K, ones).item()) < 1e-12
    informative = hsic(K, rbf_kernel(u[:, None].double()), centring="reference")
    assert informative < K.mean()


def test_an_unknown_centring_is_rejected():
    with pytest.raises(ValueError, match="centring"):
        centre_kernel(torch.eye(3), centring="double")
    x, labels, u = synthetic_segments(num_classes=2, per_class=5)
    with pytest.raises(ValueError, match="centring"):
        conditional_dependence(x, u, labels, centring="n2")
