"""Span masking: coverage, the never-whole guarantee, spans, determinism, the mask vector."""

from __future__ import annotations

import pytest
import torch

from ssl_speech.nn.masking import SpanMask, SpanMasker


def spans_to_mask(starts: torch.Tensor, valid: torch.Tensor, span: int, length: int):
    mask = torch.zeros(starts.shape[0], length, dtype=torch.bool)
    for b in range(starts.shape[0]):
        for s, v in zip(starts[b].tolist(), valid[b].tolist()):
            if v:
                mask[b, s : s + span] = True
    return mask


def test_masked_fraction_matches_the_expected_fraction():
    masker = SpanMasker(4, mask_prob=0.065, span=10, min_unmasked=1)
    generator = torch.Generator().manual_seed(0)
    mask, _, _ = masker.sample(3000, 128, generator=generator)
    expected = masker.expected_fraction(128)
    assert abs(mask.float().mean().item() - expected) < 0.01
    # Away from the edges every frame is covered by L possible starts: 1 - (1 - p)^L.
    interior = mask[:, 20:108].float().mean().item()
    assert abs(interior - (1 - 0.935**10)) < 0.01
    # Edge frames have fewer covering starts, hence the exact mean sits below the limit.
    assert expected < 1 - 0.935**10
    assert masker.expected_fraction(100_000) == pytest.approx(1 - 0.935**10, abs=1e-3)


@pytest.mark.parametrize("length,min_unmasked", [(11, 1), (12, 1), (15, 3), (30, 2), (64, 5)])
def test_never_masks_the_whole_sequence(length, min_unmasked):
    masker = SpanMasker(4, mask_prob=0.9, span=10, min_unmasked=min_unmasked, min_spans=1)
    generator = torch.Generator().manual_seed(1)
    mask, starts, valid = masker.sample(500, length, generator=generator)
    assert ((~mask).sum(dim=1) >= min_unmasked).all()
    assert mask.any(dim=1).all()  # it still masks where it can
    assert torch.equal(mask, spans_to_mask(starts, valid, 10, length))


def test_too_short_sequences_are_not_masked():
    masker = SpanMasker(4, mask_prob=1.0, span=10, min_unmasked=3)
    mask, starts, valid = masker.sample(5, 12, generator=torch.Generator().manual_seed(0))
    assert not mask.any() and starts.shape == (5, 0) and valid.shape == (5, 0)
    assert masker.expected_fraction(12) == 0.0


def test_spans_are_sorted_in_range_and_make_the_mask():
    masker = SpanMasker(4, mask_prob=0.1, span=7, min_unmasked=1)
    mask, starts, valid = masker.sample(64, 50, generator=torch.Generator().manual_seed(2))
    assert torch.equal(mask, spans_to_mask(starts, valid, 7, 50))
    assert (starts[valid] >= 0).all() and (starts[valid] <= 50 - 7).all()
    assert (starts[~valid] == 0).all()
    # Valid entries come first and are sorted.
    assert torch.equal(valid, valid.sort(dim=1, descending=True).values)
    for b in range(64):
        real = starts[b][valid[b]]
        assert torch.equal(real, real.sort().values)
    assert valid.sum(dim=1).max() == valid.shape[1]


def test_generator_makes_the_draws_deterministic():
    masker = SpanMasker(4)
    a = masker.sample(8, 128, generator=torch.Generator().manual_seed(5))
    b = masker.sample(8, 128, generator=torch.Generator().manual_seed(5))
    c = masker.sample(8, 128, generator=torch.Generator().manual_seed(6))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_min_spans_adds_starts_where_none_came_up():
    masker = SpanMasker(4, mask_prob=0.0, span=3, min_spans=2)
    mask, starts, valid = masker.sample(200, 20, generator=torch.Generator().manual_seed(0))
    assert (valid.sum(dim=1) == 2).all()
    assert torch.equal(mask, spans_to_mask(starts, valid, 3, 20))
    # The added starts are spread over all candidate positions.
    assert set(starts[valid].tolist()) == set(range(18))


def test_forward_replaces_masked_frames_with_the_learned_vector():
    torch.manual_seed(0)
    masker = SpanMasker(6, mask_prob=0.2, span=4)
    x = torch.randn(3, 40, 6, requires_grad=True)
    out = masker(x, generator=torch.Generator().manual_seed(3))
    assert isinstance(out, SpanMask) and out.x.shape == x.shape and out.span == 4
    assert out.mask.any() and (~out.mask).any()
    assert torch.equal(out.x[out.mask], masker.mask_embedding.expand(int(out.mask.sum()), 6))
    assert torch.equal(out.x[~out.mask], x[~out.mask])
    out.x.sum().backward()
    assert masker.mask_embedding.grad is not None
    assert torch.equal(masker.mask_embedding.grad, out.mask.sum().float().expand(6))
    assert torch.equal(x.grad[..., 0], (~out.mask).float())


def test_pool_is_the_mean_over_each_span():
    torch.manual_seed(0)
    features = torch.randn(2, 30, 5)
    starts = torch.tensor([[3, 10, 25], [0, 0, 0]])
    valid = torch.tensor([[True, True, True], [True, False, False]])
    mask = spans_to_mask(starts, valid, 5, 30)
    pooled = SpanMask(features, mask, starts, valid, 5).pool(features)
    assert pooled.shape == (2, 3, 5)
    for b, j in [(0, 0), (0, 1), (0, 2), (1, 0)]:
        s = starts[b, j]
        torch.testing.assert_close(pooled[b, j], features[b, s : s + 5].mean(dim=0))
    assert (pooled[1, 1:] == 0).all()
    assert torch.equal(SpanMask(features, mask, starts, valid, 5).ends, starts + 5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(dim=0), "dim"),
        (dict(dim=4, mask_prob=1.5), "mask_prob"),
        (dict(dim=4, span=0), "span"),
        (dict(dim=4, min_unmasked=0), "min_unmasked"),
        (dict(dim=4, min_spans=-1), "min_spans"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpanMasker(**kwargs)


def test_wrong_feature_size_is_reported():
    with pytest.raises(ValueError, match="SpanMasker expects"):
        SpanMasker(4)(torch.randn(2, 10, 5))
