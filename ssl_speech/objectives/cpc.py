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

import torch
from torch import Tensor, nn

from ssl_speech.data.batch import Batch
from ssl_speech.nn.heads import make_heads
from ssl_speech.objectives.base import Objective, ObjectiveOutput
from ssl_speech.objectives.negatives import check_mode, negative_pool, sample_negative_indices
from ssl_speech.objectives.scores import (
    check_features,
    check_method,
    count_anchors,
    info_nce_log_prob,
    resolve_score_scale,
    step_scores,
)


class CPC(Objective):
    """CPC InfoNCE over K future steps.

    Args:
        dim: latent size D of the encoder output z.
        context_dim: context size H of c; default ``dim``.
        num_steps: prediction steps K.
        num_negatives: negatives N per anchor, shared by all steps.
        head: prediction heads, ``"transformer"`` (CPC_audio default) or ``"linear"``.
        head_heads: attention heads of the Transformer heads.
        head_ffn_dim: feed-forward size of the Transformer heads.
        negatives: ``"batch"`` or ``"sequence"`` (see :mod:`ssl_speech.objectives.negatives`).
        exclude_positive: never draw an anchor's K future frames as its negatives.
        score_scale: multiplies ``p·z``: a number, ``"1/dim"`` (default) or ``"1/sqrt(dim)"``.
        dropout: dropout inside the Transformer heads.
        score_method: ``"gather"`` or ``"dense"`` (see :mod:`ssl_speech.objectives.scores`).
        negatives_across_ranks: under DDP, draw batch-mode negatives from the latents of every
            rank (see :mod:`ssl_speech.objectives.negatives` for the trade-off).

    ``forward(model, batch)`` runs ``z, c = model(batch.wav)`` with z ``(B, T, D)`` and c
    ``(B, T, H)`` causal, and returns the loss with metrics ``acc``, ``acc/step_{k}``,
    ``loss/step_{k}`` and ``mi_bound = mean_k(log(N+1) − L_k)`` (the InfoNCE lower bound on the
    mutual information, in nats).
    """

    def __init__(
        self,
        dim: int = 256,
        context_dim: int | None = None,
        num_steps: int = 12,
        num_negatives: int = 128,
        head: str = "transformer",
        head_heads: int = 8,
        head_ffn_dim: int = 2048,
        negatives: str = "batch",
        exclude_positive: bool = False,
        score_scale: float | str | None = None,
        dropout: float = 0.0,
        score_method: str = "dense",
        negatives_across_ranks: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (
            ("dim", dim),
            ("num_steps", num_steps),
            ("num_negatives", num_negatives),
        ):
            if value < 1:
                raise ValueError(f"CPC {name} must be >= 1, got {value}")
        self.dim = dim
        self.context_dim = dim if context_dim is None else context_dim
        self.num_steps = num_steps
        self.num_negatives = num_negatives
        self.negatives = check_mode(negatives)
        self.exclude_positive = exclude_positive
        self.score_scale = resolve_score_scale(score_scale, dim)
        self.score_method = check_method(score_method)
        self.negatives_across_ranks = negatives_across_ranks
        self.heads: nn.Module = make_heads(
            head, self.context_dim, dim, num_steps, head_heads, head_ffn_dim, dropout
        )

    def forward(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        z, c = model(batch.wav)
        hop = getattr(getattr(model, "encoder", None), "hop", None)
        return self.compute(z, c, num_samples=batch.wav.shape[-1], hop=hop)

    def sample_negatives(
        self, z: Tensor, num_anchors: int, pool_sequences: int | None = None, offset: int = 0
    ) -> Tensor:
        """Negative indices ``(B, A, N)`` for anchors ``0 … A−1``, into ``z.reshape(B·T, D)``
        or into a pool of ``pool_sequences`` sequences where ``z`` starts at ``offset``."""
        B, T = z.shape[:2]
        return sample_negative_indices(
            B,
            T,
            self.num_negatives,
            num_anchors,
            self.negatives,
            exclude_positive=self.exclude_positive,
            num_steps=self.num_steps,
            device=z.device,
            pool_sequences=pool_sequences,
            sequence_offset=offset,
        )

    def compute(
        self,
        z: Tensor,
        c: Tensor,
        negative_index: Tensor | None = None,
        num_samples: int | None = None,
        hop: int | None = None,
    ) -> ObjectiveOutput:
        """The loss and metrics from the model's outputs.

        Args:
            z: ``(B, T, D)`` latents.
            c: ``(B, T, H)`` causal context.
            negative_index: ``(B, T−K, N)`` negatives to use instead of a fresh draw.
            num_samples: window length in samples, only to word the too-short error.
            hop: the encoder's samples per frame, likewise.
        """
        check_features(z, c, self.dim, self.context_dim, type(self).__name__)
        K = self.num_steps
        A = count_anchors(z.shape[1], K, num_samples, hop)
        pool, offset = negative_pool(z, self.negatives_across_ranks)
        if negative_index is None:
            negative_index = self.sample_negatives(z, A, pool.shape[0], offset)
        # The heads are causal, so predicting from c[:, :A] equals heads(c)[:, :A].
        predictions = self.heads(c[:, :A])  # (B, A, K, D)
        positive, negative = step_scores(  # (B, A, K), (B, A, K, N)
            predictions, z, negative_index, self.score_scale, self.score_method, pool
        )
        log_prob = info_nce_log_prob(positive, negative.logsumexp(-1))
        step_loss = -log_prob.mean(dim=(0, 1))  # (K,)
        with torch.no_grad():
            step_acc = (positive > negative.amax(-1)).float().mean(dim=(0, 1))
        metrics = {"acc": step_acc.mean()}
        metrics.update({f"acc/step_{k + 1}": step_acc[k] for k in range(K)})
        metrics.update({f"loss/step_{k + 1}": step_loss[k] for k in range(K)})
        num_negatives = negative_index.shape[-1]
        metrics["mi_bound"] = math.log(num_negatives + 1) - step_loss.mean()
        return ObjectiveOutput(loss=step_loss.sum(), metrics=metrics)
