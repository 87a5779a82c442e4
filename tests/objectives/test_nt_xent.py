"""Cosine InfoNCE and NT-Xent against direct, loop-by-loop computations."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_speech.objectives.nt_xent import cosine_info_nce, nt_xent


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def direct_nt_xent(first, second, tau, groups=None):
    """SimCLR section 2.1: views 2k and 2k+1 of example k, l(i, j) summed over both orders."""
    views = [v for pair in zip(first, second) for v in pair]  # interleaved as in the paper
    owner = [k for k in range(len(first)) for _ in range(2)]
    total, right = 0.0, 0
    for i, anchor in enumerate(views):
        j = i + 1 if i % 2 == 0 else i - 1
        denominator, best_other = 0.0, -math.inf
        for k, other in enumerate(views):
            if k == i:
                continue
            if groups is not None and k != j and groups[owner[k]] == groups[owner[i]]:
                continue
            score = cosine(anchor, other) / tau
            denominator += math.exp(score)
            if k != j:
                best_other = max(best_other, score)
        positive = cosine(anchor, views[j]) / tau
        total += -(positive - math.log(denominator))
        right += positive > best_other
    return total / len(views), right / len(views)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nt_xent_matches_the_direct_computation(tau):
    torch.manual_seed(0)
    first, second = torch.randn(6, 5), torch.randn(6, 5)
    second[:3] = first[:3] + 0.3 * torch.randn(3, 5)  # some easy pairs, some hard
    loss, acc = nt_xent(first, second, tau)
    expected_loss, expected_acc = direct_nt_xent(first, second, tau)
    assert loss.item() == pytest.approx(expected_loss, rel=1e-5)
    assert acc.item() == pytest.approx(expected_acc)


def test_nt_xent_groups_remove_same_utterance_negatives():
    torch.manual_seed(1)
    first, second = torch.randn(5, 4), torch.randn(5, 4)
    groups = torch.tensor([0, 1, 0, 2, 1])
    loss, acc = nt_xent(first, second, 0.2, groups)
    expected_loss, expected_acc = direct_nt_xent(first, second, 0.2, groups.tolist())
    assert loss.item() == pytest.approx(expected_loss, rel=1e-5)
    assert acc.item() == pytest.approx(expected_acc)
    assert loss.item() != pytest.approx(nt_xent(first, second, 0.2)[0].item(), rel=1e-3)


def test_nt_xent_is_low_for_identical_views_and_gradients_flow():
    torch.manual_seed(2)
    first = torch.randn(8, 16, requires_grad=True)
    loss, acc = nt_xent(first, first * 2.0, 0.1)  # cosine ignores the scale
    assert acc.item() == 1.0
    shuffled, _ = nt_xent(first, first[torch.randperm(8)], 0.1)
    assert loss.item() < shuffled.item()
    loss.backward()
    assert first.grad is not None and torch.isfinite(first.grad).all()


def test_cosine_info_nce_matches_the_direct_computation_with_exclusions():
    torch.manual_seed(3)
    queries, keys = torch.randn(4, 6), torch.randn(7, 6)
    targets = torch.tensor([0, 3, 6, 2])
    exclude = torch.zeros(4, 7, dtype=torch.bool)
    exclude[0, 1] = exclude[2, 5] = exclude[2, 0] = True
    loss, acc = cosine_info_nce(queries, keys, targets, 0.3, exclude)
    total, right = 0.0, 0
    for m in range(4):
        scores = {k: cosine(queries[m], keys[k]) / 0.3 for k in range(7) if not exclude[m, k]}
        positive = scores.pop(int(targets[m]))
        total += -(positive - math.log(math.exp(positive) + sum(map(math.exp, scores.values()))))
        right += positive > max(scores.values())
    assert loss.item() == pytest.approx(total / 4, rel=1e-5)
    assert acc.item() == pytest.approx(right / 4)


def test_cosine_info_nce_rejects_bad_inputs():
    q, k, t = torch.randn(3, 4), torch.randn(5, 4), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="temperature"):
        cosine_info_nce(q, k, t, 0.0)
    with pytest.raises(ValueError, match="same E"):
        cosine_info_nce(q, torch.randn(5, 3), t, 0.1)
    exclude = torch.zeros(3, 5, dtype=torch.bool)
    exclude[1, 1] = True
    with pytest.raises(ValueError, match="positive key is excluded"):
        cosine_info_nce(q, k, t, 0.1, exclude)
    with pytest.raises(ValueError, match="two views"):
        nt_xent(torch.randn(3, 4), torch.randn(2, 4), 0.1)
