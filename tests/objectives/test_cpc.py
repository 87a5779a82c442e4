"""CPC: agreement with a CPC_audio-style reference, metrics, validation, training."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from reference import TinyModel, reference_cpc
from shipped import assert_defaults_are_the_shipped_config, shipped_objective_config

from ssl_speech.data.batch import Batch
from ssl_speech.objectives.cpc import CPC
from ssl_speech.objectives.scores import candidate_scores, count_anchors, window_index

D, H = 16, 24


def make_cpc(head: str, **kwargs) -> CPC:
    return CPC(
        dim=D,
        context_dim=H,
        num_steps=4,
        num_negatives=10,
        head=head,
        head_heads=4,
        head_ffn_dim=32,
        **kwargs,
    )


@pytest.mark.parametrize("head", ["linear", "transformer"])
@pytest.mark.parametrize("negatives", ["batch", "sequence"])
@pytest.mark.parametrize("method", ["gather", "dense"])
def test_loss_and_gradients_match_reference(head: str, negatives: str, method: str) -> None:
    torch.manual_seed(0)
    cpc = make_cpc(head, negatives=negatives, score_method=method, exclude_positive=True)
    reference_heads = copy.deepcopy(cpc.core.heads)
    B, T, K = 3, 15, cpc.num_steps
    z = torch.randn(B, T, D, requires_grad=True)
    c = torch.randn(B, T, H, requires_grad=True)
    negative_index = cpc.core.sample_negatives(z, T - K)

    out = cpc.compute(z, c, negative_index)
    step_loss, step_acc = reference_cpc(
        reference_heads(c)[:, : T - K], z, negative_index, cpc.core.score_scale
    )
    torch.testing.assert_close(out.loss, step_loss.sum())
    for k in range(K):
        torch.testing.assert_close(out.metrics[f"loss/step_{k + 1}"], step_loss[k].detach())
        torch.testing.assert_close(out.metrics[f"acc/step_{k + 1}"], step_acc[k])
    torch.testing.assert_close(out.metrics["acc"], step_acc.mean())
    torch.testing.assert_close(out.metrics["mi_bound"], math.log(11) - step_loss.detach().mean())

    grads = torch.autograd.grad(out.loss, [z, c, *cpc.core.heads.parameters()])
    ref_grads = torch.autograd.grad(step_loss.sum(), [z, c, *reference_heads.parameters()])
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_score_methods_agree_with_explicit_dot_products() -> None:
    torch.manual_seed(0)
    z = torch.randn(2, 9, 5)
    predictions = torch.randn(2, 6, 3, 5)
    index = torch.randint(0, 18, (2, 6, 7))
    flat = z.reshape(-1, 5)
    expected = torch.einsum("bakd,bacd->bakc", predictions, flat[index]) * 0.5
    for method in ("gather", "dense"):
        torch.testing.assert_close(candidate_scores(predictions, z, index, 0.5, method), expected)
    window = window_index(2, 9, 6, 3)
    assert window[1, 4].tolist() == [9 + 5, 9 + 6, 9 + 7]


def test_ideal_predictor_reaches_the_bound() -> None:
    # One-hot latents z_t = e_t, c = z, and step k's linear map shifts e_t to e_{t+k}: each
    # prediction is its positive, orthogonal to every allowed negative.
    cpc = CPC(
        dim=8, num_steps=2, num_negatives=3, head="linear", score_scale=100.0, exclude_positive=True
    )
    z = torch.eye(8).unsqueeze(0)  # (1, T=8, D=8)
    with torch.no_grad():
        for k in range(2):
            cpc.core.heads.weight[:, k * 8 : (k + 1) * 8] = torch.eye(8).roll(k + 1, dims=1)
    out = cpc.compute(z, z.clone())
    assert out.loss < 1e-6
    assert out.metrics["acc"] == 1.0
    torch.testing.assert_close(out.metrics["mi_bound"], torch.tensor(math.log(4)))


def test_forward_runs_the_model_and_metrics_are_detached_scalars() -> None:
    torch.manual_seed(0)
    model = TinyModel(D, H)
    cpc = make_cpc("transformer")
    batch = Batch(wav=torch.randn(2, 1, 20 * 160), speaker=torch.zeros(2, dtype=torch.long))
    out = cpc(model, batch)
    assert out.loss.requires_grad and out.loss.dim() == 0
    assert set(out.metrics) == (
        {"acc", "mi_bound"}
        | {f"acc/step_{k}" for k in range(1, 5)}
        | {f"loss/step_{k}" for k in range(1, 5)}
    )
    assert all(v.dim() == 0 and not v.requires_grad for v in out.metrics.values())


def test_too_short_window_names_frames_hop_and_steps() -> None:
    model = TinyModel(D, D)
    cpc = CPC(dim=D, num_steps=12, num_negatives=4, head="linear")
    # 2020 samples give 12 frames of the encoder's hop 160 (the hop is read from the encoder).
    batch = Batch(wav=torch.randn(1, 1, 12 * 160 + 100), speaker=torch.zeros(1, dtype=torch.long))
    with pytest.raises(
        ValueError,
        match=r"window of 12 frames \(2020 samples at hop 160\) is too short for 12 prediction "
        r"steps: use windows of at least 2080 samples",
    ):
        cpc(model, batch)
    with pytest.raises(ValueError, match="window of 80 frames is too short for 80 prediction"):
        count_anchors(80, 80)


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="CPC num_steps must be >= 1, got 0"):
        CPC(num_steps=0)
    with pytest.raises(ValueError, match="unknown head kind 'gru'"):
        CPC(head="gru")
    with pytest.raises(ValueError, match="unknown negative sampling mode 'utterance'"):
        CPC(negatives="utterance")
    with pytest.raises(ValueError, match="unknown scoring method 'loop'"):
        CPC(score_method="loop")
    with pytest.raises(ValueError, match="score_scale must be > 0"):
        CPC(score_scale=0.0)
    cpc = CPC(dim=D, context_dim=H, num_steps=2, head="linear")
    with pytest.raises(ValueError, match=r"expects context c of shape \(2, 9, 24\)"):
        cpc.compute(torch.randn(2, 9, D), torch.randn(2, 9, D))


def test_bf16_autocast_keeps_loss_float32_and_finite() -> None:
    torch.manual_seed(0)
    cpc = make_cpc("transformer")
    z = torch.randn(2, 12, D, requires_grad=True)
    c = torch.randn(2, 12, H)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cpc.compute(z, c)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.slow
@pytest.mark.parametrize("head", ["linear", "transformer"])
def test_loss_falls_with_adam_on_a_fixed_batch(head: str) -> None:
    torch.manual_seed(0)
    model = TinyModel(D, H)
    cpc = make_cpc(head)
    t = torch.arange(2 * 40 * 160, dtype=torch.float32).view(2, 1, -1) / 16000
    wav = torch.sin(2 * math.pi * 220 * t * (1 + t)) + 0.1 * torch.randn_like(t)
    batch = Batch(wav=wav, speaker=torch.zeros(2, dtype=torch.long))
    optimizer = torch.optim.Adam([*model.parameters(), *cpc.parameters()], lr=1e-2)
    losses = []
    for _ in range(30):
        out = cpc(model, batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)


def test_score_scale_names():
    assert CPC(dim=64, score_scale="1/dim").core.score_scale == 1 / 64  # CPC_audio's
    assert CPC(dim=64, score_scale=None).core.score_scale == 1 / 64
    assert CPC(dim=64).core.score_scale == 1 / 8  # the default, as configs/objective/cpc.yaml
    with pytest.raises(ValueError, match="expected a number > 0 or one of"):
        CPC(dim=64, head="linear", score_scale="1/dim^2")


def test_defaults_are_the_shipped_config() -> None:
    assert_defaults_are_the_shipped_config("cpc", CPC)


def test_cpc_audio_experiment_is_cpc_audios_criterion():
    """experiment=cpc_audio: one causal Transformer layer per step with dropout 0.1 (CPC_audio's
    TransformerLayer default), 12 steps, 128 negatives, scores p·z / D."""
    from hydra.utils import instantiate

    node = shipped_objective_config("cpc", ("experiment=cpc_audio",))
    cpc = instantiate(node)
    assert type(cpc.core.heads).__name__ == "TransformerHeads"
    assert cpc.core.heads.dropout == 0.1
    assert (cpc.num_steps, cpc.core.num_negatives, cpc.core.score_scale) == (12, 128, 1 / 256)
