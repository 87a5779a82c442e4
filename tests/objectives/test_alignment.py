"""The alignment recursion against brute force, for every combination of skips."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from reference import (
    brute_force_best,
    brute_force_log_likelihood,
    brute_force_posterior,
    enumerate_alignments,
)

from ssl_speech.objectives.alignment import (
    alignment_log_likelihood,
    ctc_alignment_log_likelihood,
    viterbi_alignment,
)

SHAPES = [(1, 1), (3, 1), (3, 3), (4, 2), (5, 3), (6, 4), (6, 2)]
SKIPS = list(itertools.product([0, 1, 2], [0, 1, 2]))
# Shapes that need a skip: more predictions than latents.
SHORT = [(2, 3, 1, 0), (2, 3, 0, 1), (1, 3, 1, 1), (2, 4, 2, 1)]


def test_enumeration_counts_alignments() -> None:
    # Monotonic surjections of M positions onto K states: choose K−1 rises among M−1 gaps.
    for M, K in SHAPES:
        paths = enumerate_alignments(M, K)
        assert len(paths) == math.comb(M - 1, K - 1)
        assert len(set(paths)) == len(paths)
    # With skips, one per padded path: K−1 rises among the L−1 gaps of the padded window.
    assert len(enumerate_alignments(5, 3, 1, 2)) == math.comb(5 + 1 + 2 - 1, 2)


def test_skips_by_hand() -> None:
    # K = 2, M = 2, one skip at the beginning: padded paths (0,1,1) and (0,0,1), i.e. the
    # latents aligned (1,1) (first prediction skipped) or (0,1).
    a = torch.randn(2, 2, dtype=torch.float64)
    expected = torch.logaddexp(a[0, 1] + a[1, 1], a[0, 0] + a[1, 1])
    torch.testing.assert_close(alignment_log_likelihood(a, 1, 0), expected)
    # Two skips at the beginning: padded paths (0,1,1,1), (0,0,1,1) and (0,0,0,1); the
    # latents' (1,1) is reached by the first two, so it counts twice.
    expected = torch.logsumexp(torch.stack([a[0, 1] + a[1, 1], a[0, 1] + a[1, 1],
                                            a[0, 0] + a[1, 1]]), 0)
    torch.testing.assert_close(alignment_log_likelihood(a, 2, 0), expected)


@pytest.mark.parametrize(("skip_begin", "skip_end"), SKIPS)
@pytest.mark.parametrize(("M", "K"), SHAPES)
def test_forward_algorithm_equals_brute_force(M: int, K: int, skip_begin: int,
                                              skip_end: int) -> None:
    torch.manual_seed(M * 10 + K)
    pair = 3 * torch.randn(5, M, K, dtype=torch.float64)
    expected = brute_force_log_likelihood(pair, skip_begin, skip_end)
    torch.testing.assert_close(alignment_log_likelihood(pair, skip_begin, skip_end), expected)
    torch.testing.assert_close(ctc_alignment_log_likelihood(pair, skip_begin, skip_end), expected)


@pytest.mark.parametrize(("M", "K", "skip_begin", "skip_end"), SHORT)
def test_skips_allow_more_predictions_than_latents(M: int, K: int, skip_begin: int,
                                                   skip_end: int) -> None:
    pair = torch.randn(3, M, K, dtype=torch.float64)
    expected = brute_force_log_likelihood(pair, skip_begin, skip_end)
    torch.testing.assert_close(alignment_log_likelihood(pair, skip_begin, skip_end), expected)


def test_forward_algorithm_keeps_leading_dimensions() -> None:
    pair = torch.randn(2, 3, 5, 4)
    out = alignment_log_likelihood(pair, 1, 2)
    assert out.shape == (2, 3)
    torch.testing.assert_close(out, brute_force_log_likelihood(pair, 1, 2))


@pytest.mark.parametrize("skips", [(0, 0), (1, 2)])
@pytest.mark.parametrize("fn", [alignment_log_likelihood, ctc_alignment_log_likelihood])
def test_gradients_match_finite_differences(fn, skips) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    pair = torch.randn(3, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: fn(p, *skips), (pair,))


@pytest.mark.parametrize(("skip_begin", "skip_end"), SKIPS)
def test_gradient_is_the_alignment_posterior(skip_begin: int, skip_end: int) -> None:
    # d logZ / d a_{m,k} = P(π(m) = k): rows sum to one, unreachable pairs get zero.
    torch.manual_seed(0)
    M, K = 6, 3
    pair = torch.randn(M, K, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(alignment_log_likelihood(pair, skip_begin, skip_end), pair)
    torch.testing.assert_close(grad.sum(-1), torch.ones(M, dtype=torch.float64))
    assert torch.all(grad[0, skip_begin + 1:] == 0)
    assert torch.all(grad[-1, : max(K - 1 - skip_end, 0)] == 0)
    torch.testing.assert_close(grad, brute_force_posterior(pair.detach(), skip_begin, skip_end))


@pytest.mark.parametrize(("skip_begin", "skip_end"), SKIPS)
@pytest.mark.parametrize(("M", "K"), SHAPES)
def test_viterbi_is_a_valid_alignment_with_the_best_score(M: int, K: int, skip_begin: int,
                                                          skip_end: int) -> None:
    torch.manual_seed(M * 10 + K + 1)
    pair = torch.randn(7, M, K, dtype=torch.float64)
    path, score = viterbi_alignment(pair, skip_begin, skip_end)
    assert path.shape == (7, M)
    assert torch.all(path[:, 0] <= skip_begin) and torch.all(path[:, -1] >= K - 1 - skip_end)
    assert torch.all(path >= 0) and torch.all(path < K)
    steps = path.diff(dim=-1)
    assert torch.all((steps == 0) | (steps == 1))
    best, best_paths = brute_force_best(pair, skip_begin, skip_end)
    torch.testing.assert_close(score, best)
    assert [tuple(p) for p in path.tolist()] == best_paths


def test_alignment_runs_in_float32_under_bf16_autocast() -> None:
    pair = torch.randn(4, 6, 3).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = alignment_log_likelihood(pair, 1, 2)
        path, score = viterbi_alignment(pair)
    assert out.dtype == torch.float32 and score.dtype == torch.float32
    torch.testing.assert_close(out, brute_force_log_likelihood(pair.float(), 1, 2))


def test_validation_messages() -> None:
    with pytest.raises(ValueError, match="cannot align M=2 latents onto K=3 predictions"):
        alignment_log_likelihood(torch.randn(2, 3))
    with pytest.raises(ValueError, match="skip_end must be an integer >= 0, got -1"):
        viterbi_alignment(torch.randn(3, 2), 0, -1)
