"""RPC: the objective against direct computations, its bounds, gradients and MI readout."""

from __future__ import annotations

import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from reference import TinyModel
from shipped import assert_defaults_are_the_shipped_config, shipped_objective_config

from ssl_speech.config import config_dir
from ssl_speech.data.batch import Batch
from ssl_speech.nn.model import SSLModel
from ssl_speech.objectives.negatives import gather_negatives
from ssl_speech.objectives.rpc import (
    RATIO_FLOOR,
    RPC,
    check_coefficients,
    density_ratio,
    relative_objective,
)

D, H = 16, 24
MI = dict(alpha=0.01, beta=0.005, gamma=0.995)  # the paper's MI-estimation setting


def make_rpc(**kwargs) -> RPC:
    options = dict(dim=D, context_dim=H, num_steps=4, num_negatives=10, head="linear", **MI)
    options.update(kwargs)
    return RPC(**options)


def test_objective_matches_a_hand_computation() -> None:
    # One sequence, two anchors, two steps, two negatives: every term written out.
    positive = torch.tensor([[[1.0, 2.0], [3.0, -1.0]]])  # (B=1, A=2, K=2)
    negative = torch.tensor([[[[0.5, -0.5], [1.0, 0.0]], [[2.0, 1.0], [-2.0, 0.5]]]])
    a, b, g = 0.1, 0.2, 0.5
    expected = []
    for k in range(2):
        pos = [positive[0, t, k].item() for t in range(2)]
        neg = [negative[0, t, k, n].item() for t in range(2) for n in range(2)]
        joint = sum(f - b / 2 * f * f for f in pos) / len(pos)
        marginal = sum(a * f + g / 2 * f * f for f in neg) / len(neg)
        expected.append(joint - marginal)
    got = relative_objective(positive, negative, a, b, g)
    torch.testing.assert_close(got, torch.tensor(expected))
    # Step 1: joint (0.9 + 2.1)/2 = 1.5, marginal (0.1125 + 0.0125 + 1.1 + 0.45)/4 = 0.41875.
    assert got[0].item() == pytest.approx(1.5 - 0.41875)


@pytest.mark.parametrize("method", ["gather", "dense"])
def test_compute_matches_explicit_scores(method: str) -> None:
    torch.manual_seed(0)
    rpc = make_rpc(score_method=method, score_scale=0.3, exclude_positive=True)
    B, T, K = 3, 15, rpc.num_steps
    A = T - K
    z = torch.randn(B, T, D, requires_grad=True)
    c = torch.randn(B, T, H, requires_grad=True)
    negative_index = torch.randint(0, B * T, (B, A, rpc.core.num_negatives))
    out = rpc.compute(z, c, negative_index)

    predictions = rpc.core.heads(c)[:, :A]  # (B, A, K, D)
    negatives = gather_negatives(z, negative_index)  # (B, A, N, D)
    j, nce = [], []
    for k in range(K):
        p = predictions[:, :, k]
        pos = (p * z[:, k + 1 : k + 1 + A]).sum(-1) * 0.3  # (B, A)
        neg = torch.einsum("bad,band->ban", p, negatives) * 0.3  # (B, A, N)
        j.append((pos - MI["beta"] / 2 * pos**2).mean()
                 - (MI["alpha"] * neg + MI["gamma"] / 2 * neg**2).mean())
        logits = torch.cat([pos.unsqueeze(-1), neg], -1)
        nce.append(-logits.log_softmax(-1)[..., 0].mean())
        ratio = (MI["gamma"] * pos + MI["alpha"]) / (1 - MI["beta"] * pos)
        torch.testing.assert_close(
            out.metrics[f"mi_rpc/step_{k + 1}"], ratio.clamp(min=RATIO_FLOOR).log().mean()
        )
    j, nce = torch.stack(j), torch.stack(nce)
    torch.testing.assert_close(out.loss, -j.sum())
    torch.testing.assert_close(out.metrics["rpc_j"], j.mean().detach())
    torch.testing.assert_close(out.metrics["mi_bound"], math.log(11) - nce.mean().detach())
    grads = torch.autograd.grad(out.loss, [z, c])
    ref_grads = torch.autograd.grad(-j.sum(), [z, c])
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_loss_is_bounded_for_bounded_scores() -> None:
    a, b, g = MI["alpha"], MI["beta"], MI["gamma"]
    K = 3
    # Whatever the scores, J_k <= max_f(f − β/2 f²) − min_f(αf + γ/2 f²) = 1/(2β) + α²/(2γ).
    floor = -K * (1 / (2 * b) + a * a / (2 * g))
    # With |f| <= M, J_k >= −(βM²/2 + M) − (αM + γM²/2).
    for bound in (1.0, 10.0, 100.0, 1e4):
        ceiling = K * (b * bound**2 / 2 + bound + a * bound + g * bound**2 / 2)
        for seed in range(20):
            gen = torch.Generator().manual_seed(seed)
            positive = (2 * torch.rand(2, 5, K, generator=gen) - 1) * bound
            negative = (2 * torch.rand(2, 5, K, 7, generator=gen) - 1) * bound
            loss = -relative_objective(positive, negative, a, b, g).sum()
            assert floor <= loss.item() <= ceiling * (1 + 1e-6), (bound, seed)
        # The extremes: positives at the maximiser 1/β (if reachable), negatives at −α/γ.
        best = torch.full((1, 1, K), min(1 / b, bound))
        worst_neg = torch.full((1, 1, K, 1), -a / g)
        loss = -relative_objective(best, worst_neg, a, b, g).sum()
        assert loss.item() >= floor - 1e-3
    at_optimum = -relative_objective(torch.full((1, 1, K), 1 / b), torch.full((1, 1, K, 1), -a / g),
                                     a, b, g).sum()
    assert at_optimum.item() == pytest.approx(floor, rel=1e-5)


def test_gradients_are_finite_and_affine_for_large_scores() -> None:
    # Scores of a few hundred: InfoNCE's log-sum-exp is still finite here too, and RPC's
    # gradient is the exact affine form, with no softmax saturation.
    torch.manual_seed(0)
    a, b, g = 0.0, 1e-3, 1.0
    B, A, K, N = 2, 6, 3, 9
    positive = (300 * torch.randn(B, A, K)).requires_grad_()
    negative = (300 * torch.randn(B, A, K, N)).requires_grad_()
    loss = -relative_objective(positive, negative, a, b, g).sum()
    dpos, dneg = torch.autograd.grad(loss, [positive, negative])
    assert torch.isfinite(dpos).all() and torch.isfinite(dneg).all()
    torch.testing.assert_close(dpos, -(1 - b * positive.detach()) / (B * A))
    torch.testing.assert_close(dneg, (a + g * negative.detach()) / (B * A * N))

    logits = torch.cat([positive.unsqueeze(-1), negative], dim=-1)
    nce = -logits.log_softmax(-1)[..., 0].mean()
    nce_grads = torch.autograd.grad(nce, [positive, negative])
    assert torch.isfinite(nce).item() and all(torch.isfinite(x).all() for x in nce_grads)


def test_large_latents_through_the_objective_under_bf16() -> None:
    torch.manual_seed(0)
    rpc = make_rpc(head="transformer", head_heads=4, head_ffn_dim=32, score_scale=1.0)
    z = (50 * torch.randn(2, 12, D)).requires_grad_()
    c = torch.randn(2, 12, H)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = rpc.compute(z, c)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    assert torch.isfinite(z.grad).all()
    assert all(torch.isfinite(v) for v in out.metrics.values())


def _gaussian_log_ratio(x: torch.Tensor, y: torch.Tensor, rho: float) -> torch.Tensor:
    """log p(x, y) / (p(x) p(y)) for standard normals with correlation ``rho``."""
    s = 1 - rho * rho
    return -0.5 * math.log(s) - (rho * rho * (x * x + y * y) - 2 * rho * x * y) / (2 * s)


@pytest.mark.parametrize("coefficients", [MI, dict(alpha=0.0, beta=1e-3, gamma=1.0),
                                          dict(alpha=0.5, beta=0.01, gamma=0.5)])
def test_ratio_readout_recovers_a_gaussian_density_ratio(coefficients: dict) -> None:
    a, b, g = coefficients["alpha"], coefficients["beta"], coefficients["gamma"]
    rho = 0.8
    gen = torch.Generator().manual_seed(0)
    n = 200_000
    x = torch.randn(n, generator=gen, dtype=torch.float64)
    y = rho * x + math.sqrt(1 - rho * rho) * torch.randn(n, generator=gen, dtype=torch.float64)
    r = _gaussian_log_ratio(x, y, rho).exp()
    optimum = (r - a) / (b * r + g)  # f* on samples of the joint
    ratio, clamped = density_ratio(optimum, a, b, g)
    # At the optimum βf < 1 always; the readout clamps only far tails (r below the floor, or
    # so large that βf* > 1 − ε).
    assert (b * optimum < 1).all()
    assert clamped.float().mean().item() < 1e-4
    torch.testing.assert_close(ratio[~clamped].double(), r[~clamped], rtol=1e-4, atol=1e-6)
    true_mi = -0.5 * math.log(1 - rho * rho)  # 0.511 nats
    assert ratio.log().mean().item() == pytest.approx(true_mi, abs=0.01)

    # f* maximises J: on samples of the joint (positives) and of the product (negatives, y
    # shuffled), moving away from f* lowers the objective.
    y_marginal = y[torch.randperm(n, generator=gen)]
    r_marginal = _gaussian_log_ratio(x, y_marginal, rho).exp()
    optimum_marginal = (r_marginal - a) / (b * r_marginal + g)

    def objective(shift: float, factor: float) -> float:
        pos = (factor * optimum + shift).view(1, n, 1)
        neg = (factor * optimum_marginal + shift).view(1, n, 1, 1)
        return relative_objective(pos.double(), neg.double(), a, b, g).item()

    best = objective(0.0, 1.0)
    for shift, factor in ((0.05, 1.0), (-0.05, 1.0), (0.0, 1.1), (0.0, 0.9)):
        assert objective(shift, factor) < best, (shift, factor)


def test_ratio_readout_clamps_where_undefined() -> None:
    scores = torch.tensor([-1.0, 0.0, 100.0, 199.7, 250.0])
    ratio, clamped = density_ratio(scores, alpha=0.01, beta=0.005, gamma=0.995, eps=1e-3)
    assert clamped.tolist() == [True, False, False, False, True]
    assert ratio[0].item() == pytest.approx(RATIO_FLOOR)
    assert ratio[1].item() == pytest.approx(0.01 / 1.0)
    assert ratio[2].item() == pytest.approx((99.5 + 0.01) / 0.5, rel=1e-5)
    ceiling = (1 - 1e-3) / 0.005
    assert ratio[4].item() == pytest.approx((0.995 * ceiling + 0.01) / 1e-3, rel=1e-4)
    with pytest.raises(ValueError, match="eps must be in"):
        density_ratio(scores, 0.0, 0.0, 1.0, eps=1.0)


def test_forward_runs_the_model_and_metrics_are_detached_scalars() -> None:
    torch.manual_seed(0)
    model = TinyModel(D, H)
    rpc = make_rpc(head="transformer", head_heads=4, head_ffn_dim=32)
    batch = Batch(wav=torch.randn(2, 1, 20 * 160), speaker=torch.zeros(2, dtype=torch.long))
    out = rpc(model, batch)
    assert out.loss.requires_grad and out.loss.dim() == 0
    per_step = {f"{name}/step_{k}" for name in ("acc", "rpc_j", "mi_rpc") for k in range(1, 5)}
    assert set(out.metrics) == per_step | {
        "acc", "rpc_j", "mi_rpc", "mi_rpc/clamped", "mi_bound", "score_pos", "score_neg"}
    assert all(v.dim() == 0 and not v.requires_grad for v in out.metrics.values())
    torch.testing.assert_close(out.loss, -sum(out.metrics[f"rpc_j/step_{k}"] for k in range(1, 5)))


def test_shipped_config_steps_without_clamping() -> None:
    rpc = RPC(dim=64)
    assert (rpc.alpha, rpc.beta, rpc.gamma, rpc.core.score_scale) == (1.0, 0.005, 1.0, 1 / 8)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["objective=rpc"])
    torch.manual_seed(0)
    model = SSLModel(instantiate(cfg.encoder), instantiate(cfg.context))
    shipped = instantiate(cfg.objective)
    default = RPC(dim=shipped.core.dim, context_dim=shipped.core.context_dim)
    for name in ("alpha", "beta", "gamma", "num_steps", "mi_clamp"):
        assert getattr(shipped, name) == getattr(default, name), name
    for name in ("score_scale", "num_negatives", "negatives", "exclude_positive", "score_method",
                 "negatives_across_ranks"):
        assert getattr(shipped.core, name) == getattr(default.core, name), name
    # A step out of the box, on the default window: finite loss, positives' scores far below
    # 1/beta, so the MI readout clamps nothing.
    wav = torch.randn(2, 1, int(cfg.data.window))
    out = shipped(model, Batch(wav=wav, speaker=torch.zeros(2, dtype=torch.long)))
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.metrics["mi_rpc/clamped"].item() == 0.0
    assert shipped.beta * out.metrics["score_pos"].abs().item() < 0.1


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="RPC alpha must be a finite number >= 0, got -0.1"):
        make_rpc(alpha=-0.1)
    with pytest.raises(ValueError, match="RPC beta must be a finite number >= 0, got nan"):
        make_rpc(beta=float("nan"))
    with pytest.raises(ValueError, match="RPC gamma must be a finite number > 0, got 0"):
        make_rpc(gamma=0)
    with pytest.raises(ValueError, match="RPC num_negatives must be >= 1, got 0"):
        make_rpc(num_negatives=0)
    with pytest.raises(ValueError, match="RPC mi_clamp must be in"):
        make_rpc(mi_clamp=0.0)
    with pytest.raises(ValueError, match="score_scale must be > 0"):
        make_rpc(score_scale=-1.0)
    with pytest.raises(ValueError, match="unknown negative sampling mode"):
        make_rpc(negatives="utterance")
    assert check_coefficients(0, 1e-3, 1) == (0.0, 1e-3, 1.0)
    rpc = make_rpc()
    with pytest.raises(ValueError, match=r"expects context c of shape \(2, 9, 24\)"):
        rpc.compute(torch.randn(2, 9, D), torch.randn(2, 9, D))


@pytest.mark.slow
@pytest.mark.parametrize("coefficients", [dict(alpha=1.0, beta=0.005, gamma=1.0), MI])
def test_accuracy_and_objective_rise_with_adam_on_a_fixed_batch(coefficients: dict) -> None:
    torch.manual_seed(0)
    model = TinyModel(D, H)
    rpc = make_rpc(score_scale="1/sqrt(dim)", **coefficients)
    t = torch.arange(2 * 40 * 160, dtype=torch.float32).view(2, 1, -1) / 16000
    wav = torch.sin(2 * math.pi * 220 * t * (1 + t)) + 0.1 * torch.randn_like(t)
    batch = Batch(wav=wav, speaker=torch.zeros(2, dtype=torch.long))
    optimizer = torch.optim.Adam([*model.parameters(), *rpc.parameters()], lr=1e-2)
    history = []
    for _ in range(40):
        out = rpc(model, batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        history.append((out.metrics["rpc_j"].item(), out.metrics["acc"].item()))
    first_j = sum(j for j, _ in history[:5]) / 5
    last_j = sum(j for j, _ in history[-5:]) / 5
    first_acc = sum(a for _, a in history[:5]) / 5
    last_acc = sum(a for _, a in history[-5:]) / 5
    assert last_j > first_j + 0.5, (first_j, last_j)
    assert last_acc > first_acc + 0.1, (first_acc, last_acc)


def test_defaults_are_the_shipped_config() -> None:
    assert_defaults_are_the_shipped_config("rpc", RPC)


@pytest.mark.parametrize(("preset", "coefficients"), [
    ("rpc_mi", (0.01, 0.005, 0.995)),  # the paper's mutual-information estimation
    ("rpc_vision", (0.0, 0.001, 1.0)),  # the authors' vision code (CIFAR-10 script)
])
def test_presets_change_only_the_coefficients(preset: str, coefficients: tuple) -> None:
    node = shipped_objective_config(preset)
    default = shipped_objective_config("rpc")
    assert (node.alpha, node.beta, node.gamma) == coefficients
    for key in default:
        if key not in ("alpha", "beta", "gamma"):
            assert node[key] == default[key], key
