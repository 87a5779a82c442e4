"""Aligned CPC: pair scores, loss and metrics against brute force with every option, M = K."""

from __future__ import annotations

import math

import pytest
import torch
from reference import (
    TinyModel,
    brute_force_best,
    brute_force_log_likelihood,
    reference_pair_scores,
)
from shipped import assert_defaults_are_the_shipped_config, shipped_objective_config

from ssl_speech.data.batch import Batch
from ssl_speech.objectives.aligned_cpc import ACPC
from ssl_speech.objectives.cpc import CPC

D, H = 16, 24
OPTIONS = [
    dict(self_loop=loop, skip_begin=begin, skip_end=end)
    for loop in (False, True) for begin in (0, 1, 2) for end in (0, 1, 2)
]


def make_acpc(head: str = "transformer", num_negatives: int = 7, **options) -> ACPC:
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
        **options,
    )


def reference_predictions(acpc: ACPC, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``(B, A, P, D)``: the heads' K predictions, after ``z_t`` with the self-loop."""
    A = z.shape[1] - acpc.num_matched
    heads = acpc.core.heads(c)[:, :A]
    return torch.cat([z[:, :A].unsqueeze(2), heads], dim=2) if acpc.self_loop else heads


@pytest.mark.parametrize("self_loop", [False, True])
def test_pair_scores_match_reference(self_loop: bool) -> None:
    torch.manual_seed(0)
    acpc = make_acpc(self_loop=self_loop)
    B, T, M = 2, 14, 5
    z, c = torch.randn(B, T, D), torch.randn(B, T, H)
    negative_index = acpc.core.sample_negatives(z, T - M)
    pair, correct = acpc.pair_scores(z, c, negative_index)
    assert pair.shape == (B, T - M, M, 3 + self_loop)
    ref_pair, ref_correct = reference_pair_scores(
        reference_predictions(acpc, z, c), z, negative_index, M, acpc.core.score_scale
    )
    torch.testing.assert_close(pair, ref_pair)
    assert torch.equal(correct, ref_correct)


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "loop{self_loop}-{skip_begin}-{skip_end}"
                         .format(**o))
def test_loss_and_metrics_match_brute_force(options: dict) -> None:
    torch.manual_seed(0)
    acpc = make_acpc("linear", **options)
    B, T, M = 2, 12, 5
    skips = (options["skip_begin"], options["skip_end"])
    z = torch.randn(B, T, D, requires_grad=True)
    c = torch.randn(B, T, H)
    negative_index = acpc.core.sample_negatives(z, T - M)
    out = acpc.compute(z, c, negative_index)
    pair, correct = reference_pair_scores(
        reference_predictions(acpc, z, c), z, negative_index, M, acpc.core.score_scale
    )
    P = pair.shape[-1]
    flat_pair, flat_correct = pair.reshape(-1, M, P), correct.reshape(-1, M, P)
    expected = -brute_force_log_likelihood(flat_pair, *skips).mean()
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.metrics["loss"], out.loss.detach())
    (grad,) = torch.autograd.grad(out.loss, z)
    (ref_grad,) = torch.autograd.grad(expected, z)
    torch.testing.assert_close(grad, ref_grad)
    _, paths = brute_force_best(flat_pair.detach().double(), *skips)
    hits = [flat_correct[i, m, k] for i, path in enumerate(paths) for m, k in enumerate(path)]
    torch.testing.assert_close(out.metrics["acc"], torch.stack(hits).float().mean())
    used = [[path.count(k) for k in range(P) if path.count(k)] for path in paths]
    torch.testing.assert_close(out.metrics["segments"],
                               torch.tensor(sum(map(len, used)) / len(used)))
    lengths = [torch.tensor(u, dtype=torch.float64) for u in used]
    torch.testing.assert_close(out.metrics["segment_length"],
                               torch.stack([u.mean() for u in lengths]).mean().float())
    torch.testing.assert_close(
        out.metrics["segment_length_std"],
        torch.stack([u.std(correction=0) for u in lengths]).mean().float(),
    )


def test_without_skips_every_prediction_covers_a_latent() -> None:
    torch.manual_seed(0)
    acpc = make_acpc("linear", self_loop=True, skip_begin=0, skip_end=0)
    out = acpc.compute(torch.randn(2, 12, D), torch.randn(2, 12, H))
    torch.testing.assert_close(out.metrics["segments"], torch.tensor(4.0))
    torch.testing.assert_close(out.metrics["segment_length"], torch.tensor(5 / 4))


@pytest.mark.parametrize("head", ["linear", "transformer"])
def test_equal_window_and_predictions_reduce_to_cpc(head: str) -> None:
    torch.manual_seed(0)
    K = 4
    common = dict(dim=D, context_dim=H, num_negatives=9, head=head, head_heads=4, head_ffn_dim=32)
    acpc = ACPC(num_predictions=K, num_matched=K, self_loop=False, skip_begin=0, skip_end=0,
                **common)
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
    with pytest.raises(ValueError, match=r"num_matched=8 must be >= num_predictions=8 \+ 1"):
        ACPC(num_predictions=8, num_matched=8, self_loop=True)
    with pytest.raises(ValueError, match="skip_begin must be an integer >= 0, got -1"):
        ACPC(skip_begin=-1)
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


def test_defaults_are_the_authors_published_run() -> None:
    # --nPredicts 8 --CPCCTCNumMatched 12 --CPCCTCSelfLoop --CPCCTCSkipBeg 1 --CPCCTCSkipEnd 2
    acpc = ACPC()
    assert (acpc.num_predictions, acpc.num_matched, acpc.self_loop, acpc.skip_begin,
            acpc.skip_end) == (8, 12, True, 1, 2)
    old = shipped_objective_config(
        "acpc", ("objective.self_loop=false", "objective.skip_begin=0", "objective.skip_end=0"))
    assert (old.self_loop, old.skip_begin, old.skip_end) == (False, 0, 0)


def test_defaults_are_the_shipped_config() -> None:
    assert_defaults_are_the_shipped_config("acpc", ACPC)
