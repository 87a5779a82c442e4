"""Contrastive predictive coding (CPC).

van den Oord et al. 2018, "Representation Learning with Contrastive Predictive Coding"
(section 2), in the CPC_audio configuration of Rivière et al. 2020, "Unsupervised pretraining
transfers well across languages": K = 12 prediction steps from a causal context, one
Transformer layer per step as prediction network, N = 128 negatives drawn from the whole batch
(one speaker) and shared by all steps, score ``s(p, z) = p·z / D``.

For each anchor frame ``t = 0 … T−K−1`` (the frames whose K futures all exist) and step
``k = 1 … K``, cross-entropy picks ``z_{t+k}`` among ``{z_{t+k}} ∪ negatives(t)``; the loss is
``Σ_k`` of the mean over anchors. What changes from CPC_audio: the candidates are scored with one
batched matrix product for all steps (:mod:`ssl_speech.objectives.scores`) instead of a
materialised ``(B, 1+N, A, D)`` tensor per step, the heads are batched over steps, and the
accuracy counts a prediction as right only when its positive scores strictly above every
negative.
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


class CPC(Objective):
    """CPC InfoNCE over K future steps.

    Args:
        dim: latent size D of the encoder output z.
        context_dim: context size H of c; default ``dim``.
        num_steps: prediction steps K.
        **options: the predictive options shared with aligned CPC and RPC (``num_negatives``,
            ``head``, ``negatives``, ``score_scale``, ``negatives_across_ranks``, …; see
            :mod:`ssl_speech.objectives.predictive`).

    ``forward(model, batch)`` runs ``z, c = model(batch.wav)`` with z ``(B, T, D)`` and c
    ``(B, T, H)`` causal, and returns the loss with metrics ``acc``, ``acc/step_{k}``,
    ``loss/step_{k}`` and ``mi_bound = mean_k(log(N+1) − L_k)`` (the InfoNCE lower bound on the
    mutual information, in nats).
    """

    def __init__(
        self, dim: int = 256, context_dim: int | None = None, num_steps: int = 12, **options: Any
    ) -> None:
        super().__init__()
        self.num_steps = check_count("CPC", "num_steps", num_steps)
        self.core = PredictiveCore("CPC", dim, context_dim, num_steps, num_steps, **options)
        self._register_load_state_dict_pre_hook(load_heads_of_older_checkpoints)

    def forward(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        return self.compute(*self.core.encode(model, batch))

    def compute(self, z: Tensor, c: Tensor, negative_index: Tensor | None = None
                ) -> ObjectiveOutput:
        """The loss and metrics from ``z (B, T, D)`` and ``c (B, T, H)``; ``negative_index
        (B, T−K, N)`` replaces a fresh draw."""
        K = self.num_steps
        self.core.count_anchors(z, c)
        window, negative = self.core.scores(z, c, K, negative_index)  # (B, A, K, K), (B, A, K, N)
        positive = window.diagonal(dim1=-2, dim2=-1)  # step k against z_{t+k}
        log_prob = info_nce_log_prob(positive, negative.logsumexp(-1))
        step_loss = -log_prob.mean(dim=(0, 1))  # (K,)
        with torch.no_grad():
            step_acc = (positive > negative.amax(-1)).float().mean(dim=(0, 1))
        metrics = {"acc": step_acc.mean()}
        metrics.update({f"acc/step_{k + 1}": step_acc[k] for k in range(K)})
        metrics.update({f"loss/step_{k + 1}": step_loss[k] for k in range(K)})
        metrics["mi_bound"] = math.log(negative.shape[-1] + 1) - step_loss.mean()
        return ObjectiveOutput(loss=step_loss.sum(), metrics=metrics)
