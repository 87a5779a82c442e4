"""Aligned CPC: the alignment recursion against brute force, gradients, the M = K case, metrics."""

from __future__ import annotations

import math

import pytest
import torch
from reference import (
    TinyModel,
    brute_force_best,
    brute_force_log_likelihood,
    enumerate_alignments,
    reference_pair_scores,
)

from ssl_speech.data.batch import Batch
from ssl_speech.objectives.aligned_cpc import (
    ACPC,
    alignment_log_likelihood,
    ctc_alignment_log_likelihood,
    viterbi_alignment,
)
from ssl_speech.objectives.cpc import CPC

D, H = 16, 24
SHAPES = [(1, 1), (3, 1), (3, 3), (4, 2), (5, 3), (6, 4), (6, 2)]


def make_acpc(head: str = "transformer", num_negatives: int = 7) -> ACPC:
    """Three predictions aligned to five latents."""
    return ACPC(
        dim=D,
        context_dim=H,
        num_predictions=3,
        num_matched=5,
        num_negatives=num_negatives,
        head=head,
        head_heads=4,
        head_ffn_dim=32,
    )


def test_enumeration_counts_alignments() -> None:
    # Monotonic surjections of M positions onto K states: choose K−1 rises among M−1 gaps.
    for M, K in SHAPES:
        paths = enumerate_alignments(M, K)
        assert len(paths) == math.comb(M - 1, K - 1)
        assert len(set(paths)) == len(paths)


@pytest.mark.parametrize(("M", "K"), SHAPES)
def test_forward_algorithm_equals_brute_force(M: int, K: int) -> None:
    torch.manual_seed(M * 10 + K)
    pair = 3 * torch.randn(5, M, K, dtype=torch.float64)
    expected = brute_force_log_likelihood(pair)
    torch.testing.assert_close(alignment_log_likelihood(pair), expected)
    torch.testing.assert_close(ctc_alignment_log_likelihood(pair), expected)


def test_forward_algorithm_keeps_leading_dimensions() -> None:
    pair = torch.randn(2, 3, 5, 4)
    out = alignment_log_likelihood(pair)
    assert out.shape == (2, 3)
    torch.testing.assert_close(out, brute_force_log_likelihood(pair))


@pytest.mark.parametrize("fn", [alignment_log_likelihood, ctc_alignment_log_likelihood])
def test_gradients_match_finite_differences(fn) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    pair = torch.randn(3, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (pair,))


def test_gradient_is_the_alignment_posterior() -> None:
    # d logZ / d a_{m,k} = P(π(m) = k): rows sum to one, unreachable pairs get zero.
    torch.manual_seed(0)
    M, K = 6, 3
    pair = torch.randn(M, K, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(alignment_log_likelihood(pair), pair)
    torch.testing.assert_close(grad.sum(-1), torch.ones(M, dtype=torch.float64))
    assert grad[0, 1:].abs().max() == 0 and grad[-1, :-1].abs().max() == 0
    posterior = torch.zeros(M, K, dtype=torch.float64)
    log_z = brute_force_log_likelihood(pair.detach())
    for path in enumerate_alignments(M, K):
        weight = torch.exp(sum(pair[m, k] for m, k in enumerate(path)).detach() - log_z)
        for m, k in enumerate(path):
            posterior[m, k] += weight
    torch.testing.assert_close(grad, posterior)


@pytest.mark.parametrize(("M", "K"), SHAPES)
def test_viterbi_is_a_valid_alignment_with_the_best_score(M: int, K: int) -> None:
    torch.manual_seed(M * 10 + K + 1)
    pair = torch.randn(7, M, K, dtype=torch.float64)
    path, score = viterbi_alignment(pair)
    assert path.shape == (7, M)
    assert torch.all(path[:, 0] == 0) and torch.all(path[:, -1] == K - 1)
    steps = path.diff(dim=-1)
    assert torch.all((steps == 0) | (steps == 1))
    best, best_paths = brute_force_best(pair)
    torch.testing.assert_close(score, best)
    assert [tuple(p) for p in path.tolist()] == best_paths


def test_alignment_runs_in_float32_under_bf16_autocast() -> None:
    pair = torch.randn(4, 6, 3).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = alignment_log_likelihood(pair)
        path, score = viterbi_alignment(pair)
    assert out.dtype == torch.float32 and score.dtype == torch.float32
    torch.testing.assert_close(out, brute_force_log_likelihood(pair.float()))


def test_pair_scores_match_reference() -> None:
    torch.manual_seed(0)
    acpc = make_acpc()
    B, T, M = 2, 14, 5
    z, c = torch.randn(B, T, D), torch.randn(B, T, H)
    negative_index = acpc.core.sample_negatives(z, T - M)
    pair, correct = acpc.pair_scores(z, c, negative_index)
    ref_pair, ref_correct = reference_pair_scores(
        acpc.core.heads(c)[:, : T - M], z, negative_index, M, acpc.core.score_scale
    )
    torch.testing.assert_close(pair, ref_pair)
    assert torch.equal(correct, ref_correct)


def test_metrics_follow_the_viterbi_alignment() -> None:
    torch.manual_seed(0)
    acpc = make_acpc("linear")
    B, T, M, K = 2, 12, 5, 3
    z, c = torch.randn(B, T, D), torch.randn(B, T, H)
    negative_index = acpc.core.sample_negatives(z, T - M)
    out = acpc.compute(z, c, negative_index)
    pair, correct = reference_pair_scores(
        acpc.core.heads(c)[:, : T - M], z, negative_index, M, acpc.core.score_scale
    )
    flat_pair, flat_correct = pair.reshape(-1, M, K), correct.reshape(-1, M, K)
    _, paths = brute_force_best(flat_pair.double())
    hits = [flat_correct[i, m, k] for i, path in enumerate(paths) for m, k in enumerate(path)]
    lengths = torch.tensor([[path.count(k) for k in range(K)] for path in paths]).float()
    torch.testing.assert_close(out.metrics["acc"], torch.stack(hits).float().mean())
    torch.testing.assert_close(out.metrics["segment_length"], torch.tensor(M / K))
    torch.testing.assert_close(
        out.metrics["segment_length_std"], lengths.std(dim=-1, correction=0).mean()
    )
    torch.testing.assert_close(out.loss, -brute_force_log_likelihood(flat_pair).mean())
    torch.testing.assert_close(out.metrics["loss"], out.loss.detach())


@pytest.mark.parametrize("head", ["linear", "transformer"])
def test_equal_window_and_predictions_reduce_to_cpc(head: str) -> None:
    torch.manual_seed(0)
    K = 4
    common = dict(dim=D, context_dim=H, num_negatives=9, head=head, head_heads=4, head_ffn_dim=32)
    acpc = ACPC(num_predictions=K, num_matched=K, **common)
    cpc = CPC(num_steps=K, **common)
    cpc.core.heads.load_state_dict(acpc.core.heads.state_dict())
    B, T = 3, 13
    z = torch.randn(B, T, D, requires_grad=True)
    c = torch.randn(B, T, H, requires_grad=True)
    negative_index = cpc.core.sample_negatives(z, T - K)
    aligned = acpc.compute(z, c, negative_index)
    plain = cpc.compute(z, c, negative_index)
    torch.testing.assert_close(aligned.loss, plain.loss)
    torch.testing.assert_close(aligned.metrics["acc"], plain.metrics["acc"])
    torch.testing.assert_close(aligned.metrics["segment_length_std"], torch.tensor(0.0))
    grad_aligned = torch.autograd.grad(aligned.loss, [z, c])
    grad_plain = torch.autograd.grad(plain.loss, [z, c])
    for got, want in zip(grad_aligned, grad_plain, strict=True):
        torch.testing.assert_close(got, want)


def test_bf16_autocast_loss_is_finite_float32() -> None:
    torch.manual_seed(0)
    acpc = make_acpc()
    z = torch.randn(2, 12, D, requires_grad=True)
    c = torch.randn(2, 12, H)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = acpc.compute(z, c)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    assert torch.isfinite(z.grad).all()


def test_validation_messages() -> None:
    with pytest.raises(ValueError, match="num_matched=6 must be >= num_predictions=8"):
        ACPC(num_predictions=8, num_matched=6)
    with pytest.raises(ValueError, match="ACPC num_predictions must be >= 1, got 0"):
        ACPC(num_predictions=0)
    with pytest.raises(ValueError, match="cannot align M=2 latents onto K=3 predictions"):
        alignment_log_likelihood(torch.randn(2, 3))
    model = TinyModel(D, D)
    acpc = ACPC(dim=D, num_predictions=3, num_matched=12, num_negatives=4, head="linear")
    batch = Batch(wav=torch.randn(1, 1, 10 * 160), speaker=torch.zeros(1, dtype=torch.long))
    with pytest.raises(
        ValueError,
        match=r"window of 10 frames \(1600 samples at hop 160\) is "
        r"too short for 12 prediction steps",
    ):
        acpc(model, batch)


@pytest.mark.slow
@pytest.mark.parametrize("head", ["linear", "transformer"])
def test_loss_falls_with_adam_on_a_fixed_batch(head: str) -> None:
    torch.manual_seed(0)
    model = TinyModel(D, H)
    acpc = make_acpc(head, num_negatives=10)
    t = torch.arange(2 * 40 * 160, dtype=torch.float32).view(2, 1, -1) / 16000
    wav = torch.sin(2 * math.pi * 220 * t * (1 + t)) + 0.1 * torch.randn_like(t)
    batch = Batch(wav=wav, speaker=torch.zeros(2, dtype=torch.long))
    optimizer = torch.optim.Adam([*model.parameters(), *acpc.parameters()], lr=1e-2)
    losses = []
    for _ in range(30):
        out = acpc(model, batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)
