"""Negative sampling: shapes, modes, exclusion of the prediction window, determinism."""

from __future__ import annotations

import pytest
import torch

from ssl_speech.objectives.negatives import gather_negatives, sample_negative_indices


def counts_per_anchor(index: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, A, N)`` indices -> ``(B, A, size)`` how often each flat frame was drawn."""
    B, A, _ = index.shape
    counts = torch.zeros(B, A, size, dtype=torch.long)
    return counts.scatter_add_(-1, index, torch.ones_like(index))


def test_shape_range_and_defaults() -> None:
    index = sample_negative_indices(3, 20, 7)
    assert index.shape == (3, 20, 7)
    assert index.dtype == torch.long
    assert index.min() >= 0 and index.max() < 60
    assert sample_negative_indices(3, 20, 7, num_anchors=11).shape == (3, 11, 7)


def test_batch_mode_is_uniform_over_the_batch() -> None:
    gen = torch.Generator().manual_seed(0)
    B, T, N = 3, 8, 24_000
    index = sample_negative_indices(B, T, N, num_anchors=2, generator=gen)
    counts = counts_per_anchor(index, B * T).float()
    expected = N / (B * T)
    # Every frame of every sequence is drawn, each close to 1/(B·T) of the time (±10 %).
    assert torch.all((counts - expected).abs() < 0.1 * expected)


def test_sequence_mode_stays_in_the_sequence_and_is_uniform() -> None:
    gen = torch.Generator().manual_seed(1)
    B, T, N = 3, 8, 16_000
    index = sample_negative_indices(B, T, N, num_anchors=2, mode="sequence", generator=gen)
    sequence = torch.arange(B).view(B, 1, 1)
    assert torch.equal(index // T, sequence.expand_as(index))
    counts = counts_per_anchor(index, B * T).float()
    own = counts.view(B, 2, B, T)[torch.arange(B), :, torch.arange(B)]  # (B, A, T)
    assert torch.all((own - N / T).abs() < 0.1 * N / T)


@pytest.mark.parametrize("mode", ["batch", "sequence"])
def test_exclude_positive_removes_exactly_the_window(mode: str) -> None:
    gen = torch.Generator().manual_seed(2)
    B, T, K, N = 2, 10, 3, 20_000
    A = T - K
    index = sample_negative_indices(
        B, T, N, num_anchors=A, mode=mode, exclude_positive=True, num_steps=K, generator=gen
    )
    counts = counts_per_anchor(index, B * T)
    for b in range(B):
        for t in range(A):
            allowed = torch.ones(B * T, dtype=torch.bool)
            if mode == "sequence":
                allowed[:] = False
                allowed[b * T : (b + 1) * T] = True
            allowed[b * T + t + 1 : b * T + t + 1 + K] = False  # the window t+1 … t+K
            row = counts[b, t].float()
            assert torch.all(row[~allowed] == 0), (b, t)
            expected = N / int(allowed.sum())
            assert torch.all((row[allowed] - expected).abs() < 0.12 * expected), (b, t)


def test_generator_makes_draws_reproducible() -> None:
    def draw(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return sample_negative_indices(4, 16, 8, mode="sequence", generator=gen)

    assert torch.equal(draw(5), draw(5))
    assert not torch.equal(draw(5), draw(6))


def test_gather_negatives_matches_indexing() -> None:
    z = torch.randn(2, 5, 3)
    index = sample_negative_indices(2, 5, 4, num_anchors=3)
    negatives = gather_negatives(z, index)
    assert negatives.shape == (2, 3, 4, 3)
    for b in range(2):
        for a in range(3):
            for n in range(4):
                flat = int(index[b, a, n])
                torch.testing.assert_close(negatives[b, a, n], z[flat // 5, flat % 5])


def test_validation_messages() -> None:
    with pytest.raises(ValueError, match="unknown negative sampling mode 'speaker'"):
        sample_negative_indices(2, 10, 4, mode="speaker")
    with pytest.raises(ValueError, match="exclude_positive needs the prediction window"):
        sample_negative_indices(2, 10, 4, exclude_positive=True)
    with pytest.raises(ValueError, match="num_anchors=8 \\+ num_steps=3 exceeds num_frames=10"):
        sample_negative_indices(2, 10, 4, num_anchors=8, exclude_positive=True, num_steps=3)
    with pytest.raises(ValueError, match="num_anchors must be in \\[1, num_frames=10\\]"):
        sample_negative_indices(2, 10, 4, num_anchors=11)
    with pytest.raises(ValueError, match="num_negatives must be >= 1"):
        sample_negative_indices(2, 10, 0)
