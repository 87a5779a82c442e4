"""Relative predictive coding (RPC).

Tsai et al. 2021, "Self-supervised Representation Learning with Relative Predictive Coding"
(ICLR, sections 2.2–2.3). The anchors, prediction heads, negatives and scores are CPC's
(:mod:`ssl_speech.objectives.cpc`): for each anchor frame ``t = 0 … T−K−1`` and step
``k = 1 … K`` a prediction ``p_{t,k}`` is scored against its positive ``z_{t+k}`` and against
the N negatives shared by all steps, ``f = scale · p·z``. Only the objective changes: instead of
a softmax over the candidates, the relative objective

    J_k = mean_pos(f − β/2·f²) − mean_neg(α·f + γ/2·f²),     loss = −Σ_k J_k,

with ``mean_pos`` over the ``B·A`` anchors and ``mean_neg`` over the ``B·A·N`` anchor–negative
pairs. There is no log and no exp: for bounded scores the loss is bounded, and its gradient in a
score is the affine ``1 − βf`` (positive) or ``−(α + γf)/N`` (negative), whatever the others are.

What J estimates. Maximised pointwise, J's optimum is ``f* = (r − α)/(βr + γ)`` with
``r = p(z | c)/p(z)`` the density ratio of positives over negatives, and its value
``J* = E_neg[(r − α)² / (2(βr + γ))]``, a chi-square-like divergence between the joint and the
product of marginals (``α = β = 0, γ = 1`` gives ``(χ² + 1)/2``). Inverting the optimum at the
learned score gives a ratio estimate ``r̂ = (γf + α)/(1 − βf)`` and a mutual-information estimate
``mean_pos(log r̂)`` (metric ``mi_rpc``), valid while ``βf < 1`` (``f* < 1/β`` always holds at
the optimum; away from it the readout clamps ``βf ≤ 1 − ε`` and reports the clamped fraction).

How ``mi_rpc`` relates to CPC's ``mi_bound``. CPC logs ``log(N+1) − L_k``, the InfoNCE lower
bound on the information between the context and the latent k frames ahead. It holds for any
critic, so it is also computed here on RPC's own scores (metric ``mi_bound``, no gradient), and
both objectives' runs can share one plot. The bound can never exceed ``log(N+1)`` (4.86 nats at
N = 128) however good the predictor. ``mi_rpc`` is not a bound but a plug-in estimate: no
``log(N+1)`` ceiling, accurate when f is near its optimum, biased either way when it is not, and
capped per positive by the clamp at ``log((γ(1−ε)/β + α)/ε)``. Both read the ratio against the
negatives' distribution, i.e. the batch (by default one speaker), not the whole corpus.

Coefficients: α, β ≥ 0 and γ > 0 (``βr + γ > 0`` for every ratio, else f* is unbounded).
Unlike InfoNCE, J is not invariant to a shift of all scores: a constant score m is worth
``(1 − α)m − (β + γ)m²/2``, so with the paper's α = 0.01 (MI estimation) or α = 0 (vision)
every score is first pulled to ``(1 − α)/(β + γ) ≈ 1``, a constant mode that slows the start
(``objective=rpc_mi`` / ``rpc_vision`` reach 11 % accuracy after 150 steps of the shipped run
where α = 1 reaches 13 %; one seed, ``docs/objectives_fidelity.md``). Our default α = 1 (with
β = 0.005, γ = 1) centres the scores instead: ``f* = 0`` where ``r = 1``, the shift is worth
nothing at f = 0, and the model learns from the first steps as CPC does. The default score
scale is CPC's ``1/√D``; a scale of 1 starts with large scores that J first shrinks, and was
about ten times slower to start. Positives' scores stay below ``1/β = 200`` at the optimum.
Heads, negatives (also across DDP ranks) and scores come from CPC's
:class:`~ssl_speech.objectives.predictive.PredictiveCore`; only the loss is RPC's.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ssl_speech.data.batch import Batch
from ssl_speech.objectives.base import Objective, ObjectiveOutput
from ssl_speech.objectives.predictive import (
    PredictiveCore,
    check_count,
    load_heads_of_older_checkpoints,
)
from ssl_speech.objectives.scores import info_nce_log_prob

# Smallest ratio the MI readout takes the log of (γf + α can be <= 0 far from the optimum).
RATIO_FLOOR = 1e-6


def check_coefficients(alpha: float, beta: float, gamma: float) -> tuple[float, float, float]:
    """Validate RPC's α, β ≥ 0 and γ > 0 and return them as floats."""
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise ValueError(f"RPC {name} must be a finite number >= 0, got {value!r}")
    if not (isinstance(gamma, int | float) and math.isfinite(gamma) and gamma > 0):
        raise ValueError(
            f"RPC gamma must be a finite number > 0, got {gamma!r}: with gamma = 0 the optimal "
            "score (r - alpha)/(beta r + gamma) is unbounded as the density ratio r -> 0"
        )
    return float(alpha), float(beta), float(gamma)


def relative_objective(
    positive: Tensor, negative: Tensor, alpha: float, beta: float, gamma: float
) -> Tensor:
    """RPC's ``J_k`` for every step, in float32.

    Args:
        positive: ``(B, A, K)`` scores of each prediction against its positive.
        negative: ``(B, A, K, N)`` scores against the negatives.
        alpha, beta, gamma: the coefficients (module docstring).

    Returns:
        ``(K,)``: ``mean_{b,a}(f − β/2·f²) − mean_{b,a,n}(α·f + γ/2·f²)`` per step.
    """
    # Squares of bf16 scores lose half their digits: the quadratic terms run in float32.
    positive, negative = positive.float(), negative.float()
    joint = (positive - 0.5 * beta * positive.square()).mean(dim=(0, 1))
    marginal = (alpha * negative + 0.5 * gamma * negative.square()).mean(dim=(0, 1, 3))
    return joint - marginal


def density_ratio(
    scores: Tensor, alpha: float, beta: float, gamma: float, eps: float = 1e-3
) -> tuple[Tensor, Tensor]:
    """The ratio readout ``r̂ = (γf + α)/(1 − βf)``, clamped where it is not defined.

    Scores are clamped to ``βf ≤ 1 − ε`` and the ratio to at least :data:`RATIO_FLOOR`.

    Args:
        scores: any shape, the scores f of positives.
        alpha, beta, gamma: the coefficients the scores were trained with.
        eps: margin ε of the clamp, in ``(0, 1)``.

    Returns:
        ``(ratio, clamped)``: the float32 ratio and a bool mask of the entries either clamp hit.
    """
    if not 0 < eps < 1:
        raise ValueError(f"eps must be in (0, 1), got {eps!r}")
    f = scores.float()
    clamped = torch.zeros_like(f, dtype=torch.bool)
    if beta > 0:
        ceiling = (1 - eps) / beta
        clamped = f > ceiling
        f = f.clamp(max=ceiling)
    ratio = (gamma * f + alpha) / (1 - beta * f)
    clamped = clamped | (ratio < RATIO_FLOOR)
    return ratio.clamp(min=RATIO_FLOOR), clamped


class RPC(Objective):
    """Relative predictive coding over K future steps (CPC's anchors, heads and negatives).

    Args:
        dim: latent size D of the encoder output z.
        context_dim: context size H of c; default ``dim``.
        num_steps: prediction steps K.
        alpha: weight α of the negatives' linear term (>= 0).
        beta: weight β of the positives' quadratic term (>= 0); the MI readout needs βf < 1.
        gamma: weight γ of the negatives' quadratic term (> 0).
        mi_clamp: margin ε of the MI readout's clamp ``βf ≤ 1 − ε``, in ``(0, 1)``.
        **options: the predictive options shared with CPC and aligned CPC (``num_negatives``,
            ``head``, ``negatives``, ``score_scale``, ``negatives_across_ranks``, …; see
            :mod:`ssl_speech.objectives.predictive`).

    ``forward(model, batch)`` runs ``z, c = model(batch.wav)`` with z ``(B, T, D)`` and c
    ``(B, T, H)`` causal, and returns ``loss = −Σ_k J_k`` with metrics (per step ``k`` and
    averaged over steps): ``acc`` (positive above every negative), ``rpc_j``, ``mi_rpc``
    (``mean_pos log r̂``, nats), ``mi_rpc/clamped`` (fraction of positives the readout clamped),
    ``mi_bound`` (InfoNCE bound on the same scores, nats) and ``score_pos`` / ``score_neg``
    (mean positive and negative scores, to watch ``βf``).
    """

    def __init__(
        self,
        dim: int = 256,
        context_dim: int | None = None,
        num_steps: int = 12,
        alpha: float = 1.0,
        beta: float = 0.005,
        gamma: float = 1.0,
        mi_clamp: float = 1e-3,
        **options: Any,
    ) -> None:
        super().__init__()
        if not 0 < mi_clamp < 1:
            raise ValueError(f"RPC mi_clamp must be in (0, 1), got {mi_clamp!r}")
        self.alpha, self.beta, self.gamma = check_coefficients(alpha, beta, gamma)
        self.mi_clamp = float(mi_clamp)
        self.num_steps = check_count("RPC", "num_steps", num_steps)
        self.core = PredictiveCore("RPC", dim, context_dim, num_steps, num_steps, **options)
        self._register_load_state_dict_pre_hook(load_heads_of_older_checkpoints)

    def forward(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        return self.compute(*self.core.encode(model, batch))

    def compute(self, z: Tensor, c: Tensor, negative_index: Tensor | None = None
                ) -> ObjectiveOutput:
        """``loss = −Σ_k J_k`` and the metrics from ``z (B, T, D)`` and ``c (B, T, H)``;
        ``negative_index (B, T−K, N)`` replaces a fresh draw."""
        self.core.count_anchors(z, c)
        window, negative = self.core.scores(z, c, self.num_steps, negative_index)
        positive = window.diagonal(dim1=-2, dim2=-1)  # (B, A, K); negative (B, A, K, N)
        step_j = relative_objective(positive, negative, self.alpha, self.beta, self.gamma)
        metrics = self._metrics(positive.detach(), negative.detach(), step_j.detach())
        return ObjectiveOutput(loss=-step_j.sum(), metrics=metrics)

    @torch.no_grad()
    def _metrics(self, positive: Tensor, negative: Tensor, step_j: Tensor) -> dict[str, Tensor]:
        K, N = positive.shape[-1], negative.shape[-1]
        step_acc = (positive > negative.amax(-1)).float().mean(dim=(0, 1))
        ratio, clamped = density_ratio(positive, self.alpha, self.beta, self.gamma, self.mi_clamp)
        step_mi = ratio.log().mean(dim=(0, 1))
        step_nce = -info_nce_log_prob(positive, negative.logsumexp(-1)).mean(dim=(0, 1))
        metrics = {
            "acc": step_acc.mean(),
            "rpc_j": step_j.mean(),
            "mi_rpc": step_mi.mean(),
            "mi_rpc/clamped": clamped.float().mean(),
            "mi_bound": math.log(N + 1) - step_nce.mean(),
            "score_pos": positive.mean(),
            "score_neg": negative.mean(),
        }
        for k in range(K):
            metrics[f"acc/step_{k + 1}"] = step_acc[k]
            metrics[f"rpc_j/step_{k + 1}"] = step_j[k]
            metrics[f"mi_rpc/step_{k + 1}"] = step_mi[k]
        return metrics
