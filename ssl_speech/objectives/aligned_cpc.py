"""Aligned contrastive predictive coding (ACPC).

Chorowski et al. 2021, "Aligned Contrastive Predictive Coding" (Interspeech). Instead of one
prediction per future frame, each anchor ``t`` emits K predictions ``q_1 … q_K`` (default 8)
that are aligned to the next M latents ``z_{t+1} … z_{t+M}`` (default 12, ``M >= K``): the
predictions describe the upcoming segments in order, and the alignment decides how many frames
each covers.

Pair score ``a_{m,k}`` is the log-probability that prediction ``q_k`` picks the true latent
``z_{t+m}`` among itself and the anchor's N shared negatives. An alignment ``π`` maps the M
latents monotonically onto the K predictions, each prediction covering at least one
consecutive latent (``π(1) = 1``, ``π(M) = K``). The loss of an anchor is

    −log Σ_π exp(Σ_m a_{m,π(m)})

summed over every alignment by the forward algorithm on a K-state left-to-right chain, in
float32 even under autocast; its gradient weights each pair by its posterior. The loss is the
mean over anchors ``t = 0 … T−M−1``. With ``M = K`` the identity is the only alignment and
the loss equals CPC's with K steps.

What changes from the paper's code: no skipped predictions at the window's ends and no learned
blank; the forward algorithm is a short log-space recursion instead of ``ctc_loss`` (measured
faster; :func:`ctc_alignment_log_likelihood` computes the same value through ``ctc_loss``).
Metrics: ``acc`` on the best (Viterbi) alignment, the mean and standard deviation of its segment
lengths (the mean is always M/K, since every alignment has exactly K segments; the spread
shows how unevenly the predictions share the window), and ``loss``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_speech.data.batch import Batch
from ssl_speech.objectives.base import Objective, ObjectiveOutput
from ssl_speech.objectives.predictive import (
    PredictiveCore,
    check_count,
    load_heads_of_older_checkpoints,
)
from ssl_speech.objectives.scores import info_nce_log_prob

# Log-weight of a state the chain cannot be in. Finite so that logaddexp of two of them has a
# finite (zero-weighted) gradient; far below any real path score.
_IMPOSSIBLE = -1e30


def _check_pair_scores(pair: Tensor) -> tuple[int, int]:
    if pair.dim() < 2:
        raise ValueError(f"pair scores must be (..., M, K), got {tuple(pair.shape)}")
    M, K = pair.shape[-2:]
    if M < K or K < 1:
        raise ValueError(f"cannot align M={M} latents onto K={K} predictions: need M >= K >= 1")
    return M, K


def _alignment_dtype(pair: Tensor) -> torch.dtype:
    return torch.promote_types(pair.dtype, torch.float32)


def alignment_log_likelihood(pair: Tensor) -> Tensor:
    """Log-sum-exp over all alignments of the summed pair scores (the forward algorithm).

    Args:
        pair: ``(..., M, K)`` scores ``a_{m,k}``; computed in at least float32.

    Returns:
        ``(...)``: ``log Σ_π exp(Σ_m a_{m,π(m)})`` over monotonic surjective maps π from the
        M positions onto the K predictions with ``π(1) = 1`` and ``π(M) = K``.
    """
    M, K = _check_pair_scores(pair)
    with torch.autocast(pair.device.type, enabled=False):
        pair = pair.to(_alignment_dtype(pair))
        fill = pair.new_full((*pair.shape[:-2], 1), _IMPOSSIBLE)
        # alpha[..., k]: log-weight of all partial alignments of positions 1..m ending in k.
        alpha = torch.cat([pair[..., 0, :1], fill.expand(*pair.shape[:-2], K - 1)], dim=-1)
        for m in range(1, M):  # M <= a dozen positions; anchors and states stay vectorised
            advance = torch.cat([fill, alpha[..., :-1]], dim=-1)
            alpha = pair[..., m, :] + torch.logaddexp(alpha, advance)
        return alpha[..., K - 1]


@torch.no_grad()
def viterbi_alignment(pair: Tensor) -> tuple[Tensor, Tensor]:
    """The best alignment and its score.

    Args:
        pair: ``(..., M, K)`` pair scores.

    Returns:
        ``path (..., M)`` long, ``path[..., m]`` the prediction (0-based) aligned to position m,
        non-decreasing from 0 to K−1 in steps of 0 or 1; and ``score (...)`` its summed scores.
    """
    M, K = _check_pair_scores(pair)
    with torch.autocast(pair.device.type, enabled=False):
        pair = pair.to(_alignment_dtype(pair))
        fill = pair.new_full((*pair.shape[:-2], 1), _IMPOSSIBLE)
        best = torch.cat([pair[..., 0, :1], fill.expand(*pair.shape[:-2], K - 1)], dim=-1)
        advanced = []  # advanced[m-1][..., k]: the best way into state k at m came from k−1
        for m in range(1, M):
            advance = torch.cat([fill, best[..., :-1]], dim=-1)
            moved = advance > best
            advanced.append(moved)
            best = pair[..., m, :] + torch.where(moved, advance, best)
        state = torch.full(pair.shape[:-2], K - 1, dtype=torch.long, device=pair.device)
        path = [state]
        for m in range(M - 1, 0, -1):
            state = state - advanced[m - 1].gather(-1, state.unsqueeze(-1)).squeeze(-1).long()
            path.append(state)
        return torch.stack(path[::-1], dim=-1), best[..., K - 1]


def ctc_alignment_log_likelihood(pair: Tensor) -> Tensor:
    """:func:`alignment_log_likelihood` through ``torch.nn.functional.ctc_loss``.

    The K predictions are the labels ``1 … K`` and the blank is made impossible, so the CTC
    paths are exactly the monotonic surjective alignments. Each position's scores are
    normalised before ``ctc_loss`` (its gradient assumes log-probabilities) and the
    normalisers added back. Args and result as :func:`alignment_log_likelihood`.
    """
    M, K = _check_pair_scores(pair)
    batch_shape = pair.shape[:-2]
    with torch.autocast(pair.device.type, enabled=False):
        flat = pair.to(_alignment_dtype(pair)).reshape(-1, M, K)
        n = flat.shape[0]
        blank = flat.new_full((n, M, 1), _IMPOSSIBLE)
        logits = torch.cat([blank, flat], dim=-1).transpose(0, 1)  # (M, n, 1+K)
        norm = logits.logsumexp(-1, keepdim=True)
        targets = torch.arange(1, K + 1, device=pair.device).expand(n, K)
        nll = F.ctc_loss(
            logits - norm,
            targets,
            torch.full((n,), M, dtype=torch.long),
            torch.full((n,), K, dtype=torch.long),
            blank=0,
            reduction="none",
        )
        return (norm.squeeze(-1).sum(0) - nll).view(batch_shape)


class ACPC(Objective):
    """Aligned CPC: K predictions softly aligned to the next M latents.

    Args:
        dim: latent size D of the encoder output z.
        context_dim: context size H of c; default ``dim``.
        num_predictions: predictions K per anchor.
        num_matched: future latents M each anchor's predictions are aligned to (``M >= K``);
            also the window ``exclude_positive`` keeps out of the negatives.
        **options: the predictive options shared with CPC and RPC (``num_negatives``,
            ``head``, ``negatives``, ``score_scale``, ``negatives_across_ranks``, …; see
            :mod:`ssl_speech.objectives.predictive`).

    ``forward(model, batch)`` runs ``z, c = model(batch.wav)`` (z ``(B, T, D)``, c ``(B, T, H)``
    causal) and returns the loss with metrics ``loss``, ``acc``, ``segment_length`` and
    ``segment_length_std`` (module docstring).
    """

    def __init__(
        self,
        dim: int = 256,
        context_dim: int | None = None,
        num_predictions: int = 8,
        num_matched: int = 12,
        **options: Any,
    ) -> None:
        super().__init__()
        self.num_predictions = check_count("ACPC", "num_predictions", num_predictions)
        if num_matched < num_predictions:
            raise ValueError(
                f"num_matched={num_matched} must be >= num_predictions={num_predictions}: "
                "every prediction covers at least one matched latent"
            )
        self.num_matched = num_matched
        self.core = PredictiveCore("ACPC", dim, context_dim, num_predictions, num_matched,
                                   **options)
        self._register_load_state_dict_pre_hook(load_heads_of_older_checkpoints)

    def forward(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        return self.compute(*self.core.encode(model, batch))

    def pair_scores(
        self, z: Tensor, c: Tensor, negative_index: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Pair log-probabilities ``a (B, A, M, K)`` and whether each positive beats all negatives.

        ``correct[b, t, m, k]`` is true when ``s(q_k, z_{t+m+1})`` is above every negative score
        of ``q_k`` (a detached bool tensor of the same shape).
        """
        window, negative = self.core.scores(z, c, self.num_matched, negative_index)
        # window (B, A, K, M), negative (B, A, K, N)
        pair = info_nce_log_prob(window, negative.logsumexp(-1, keepdim=True))
        with torch.no_grad():
            correct = window > negative.amax(-1, keepdim=True)
        return pair.transpose(-1, -2), correct.transpose(-1, -2)

    def compute(self, z: Tensor, c: Tensor, negative_index: Tensor | None = None
                ) -> ObjectiveOutput:
        """The loss and metrics from ``z (B, T, D)`` and ``c (B, T, H)``; ``negative_index
        (B, T−M, N)`` replaces a fresh draw."""
        self.core.count_anchors(z, c)
        pair, correct = self.pair_scores(z, c, negative_index)
        loss = -alignment_log_likelihood(pair).mean()
        path, _ = viterbi_alignment(pair.detach())  # (B, A, M)
        with torch.no_grad():
            acc = correct.gather(-1, path.unsqueeze(-1)).float().mean()
            lengths = torch.zeros(*path.shape[:-1], self.num_predictions, device=path.device)
            lengths.scatter_add_(-1, path, torch.ones_like(path, dtype=lengths.dtype))  # (B, A, K)
        metrics = {
            "loss": loss.detach(),
            "acc": acc,
            "segment_length": lengths.mean(),
            "segment_length_std": lengths.std(dim=-1, correction=0).mean(),
        }
        return ObjectiveOutput(loss=loss, metrics=metrics)
