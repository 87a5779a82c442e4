"""Aligned contrastive predictive coding (ACPC).

Chorowski et al. 2021, "Aligned Contrastive Predictive Coding" (Interspeech). Instead of one
prediction per future frame, each anchor ``t`` emits K predictions ``q_1 … q_K`` (default 8)
that are aligned to the next M latents ``z_{t+1} … z_{t+M}`` (default 12, ``M >= K``): the
predictions describe the upcoming segments in order, and the alignment decides how many frames
each covers.

Pair score ``a_{m,k}`` is the log-probability that prediction ``q_k`` picks the true latent
``z_{t+m}`` among itself and the anchor's N shared negatives. An alignment ``π`` maps the M
latents monotonically onto the predictions, each prediction covering consecutive latents. The
loss of an anchor is

    −log Σ_π exp(Σ_m a_{m,π(m)})

summed over every alignment by the forward algorithm (:mod:`ssl_speech.objectives.alignment`),
in float32 even under autocast; its gradient weights each pair by its posterior. The loss is
the mean over anchors ``t = 0 … T−M−1``.

The authors' options (chorowski-lab/CPC_audio's CTC-style criterion, same semantics):

- ``self_loop``: one more prediction before the K heads', the anchor's own latent ``z_t``
  (scored like the others, gradient included), so the window may start by repeating the
  anchor's segment before the first predicted one.
- ``skip_begin`` / ``skip_end``: the window is padded with that many zero-score frames at
  each end, so up to that many predictions at the beginning / end may cover no latent.

Their published run, our default, is K = 8, M = 12, self-loop, skips 1 and 2. Without the
options (``self_loop=False, skip_begin=0, skip_end=0``, this objective's behaviour before it
had them) every one of the K predictions must cover at least one of the M latents (segments of
M/K frames on average). With ``M = K`` and no options the identity is the only alignment and
the loss equals CPC's with K steps.

Not taken from the authors' code: the learned blank (``learn_blank``: its labels there run one
past the classes ``ctc_loss`` is given, so its meaning is not defined) and
``no_negs_in_match_window`` (our ``exclude_positive`` is the counterpart; see
``docs/objectives_fidelity.md``). The forward algorithm is a short log-space recursion instead
of ``ctc_loss`` (measured faster; ``ctc_alignment_log_likelihood`` gives the same value).

Metrics: ``acc`` on the best (Viterbi) alignment (every prediction's column, self-loop
included, as the authors count it), ``segment_length`` and ``segment_length_std`` (mean and
spread of the lengths of the segments that cover at least one latent; without skips the mean is
always M/K), ``segments`` (predictions used, K + self_loop without skips) and ``loss``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ssl_speech.data.batch import Batch
from ssl_speech.objectives.alignment import (
    alignment_log_likelihood,
    check_skips,
    viterbi_alignment,
)
from ssl_speech.objectives.base import Objective, ObjectiveOutput
from ssl_speech.objectives.predictive import (
    PredictiveCore,
    check_count,
    load_heads_of_older_checkpoints,
)
from ssl_speech.objectives.scores import info_nce_log_prob


class ACPC(Objective):
    """Aligned CPC: K predictions softly aligned to the next M latents.

    Args:
        dim: latent size D of the encoder output z.
        context_dim: context size H of c; default ``dim``.
        num_predictions: predictions K per anchor (one head each).
        num_matched: future latents M each anchor's predictions are aligned to (``M >= K``,
            ``M >= K + 1`` with the self-loop); also the window ``exclude_positive`` keeps out
            of the negatives.
        self_loop: add the anchor's own latent ``z_t`` as a prediction before the K heads' (the
            authors' "always predict a repetition of the first symbol"): the window may begin
            with frames that repeat the anchor.
        skip_begin: predictions that may go unused at the beginning of the window.
        skip_end: predictions that may go unused at its end (both as the authors' criterion:
            :mod:`ssl_speech.objectives.alignment`).
        **options: the predictive options shared with CPC and RPC (``num_negatives``,
            ``head``, ``negatives``, ``score_scale``, ``negatives_across_ranks``, …; see
            :mod:`ssl_speech.objectives.predictive`).

    ``forward(model, batch)`` runs ``z, c = model(batch.wav)`` (z ``(B, T, D)``, c ``(B, T, H)``
    causal) and returns the loss with metrics ``loss``, ``acc``, ``segment_length``,
    ``segment_length_std`` and ``segments`` (module docstring).
    """

    def __init__(
        self,
        dim: int = 256,
        context_dim: int | None = None,
        num_predictions: int = 8,
        num_matched: int = 12,
        self_loop: bool = True,
        skip_begin: int = 1,
        skip_end: int = 2,
        **options: Any,
    ) -> None:
        super().__init__()
        self.num_predictions = check_count("ACPC", "num_predictions", num_predictions)
        self.self_loop = bool(self_loop)
        self.skip_begin, self.skip_end = check_skips(skip_begin, skip_end)
        aligned = num_predictions + self.self_loop
        if num_matched < aligned:
            loop = " + 1 (the self-loop)" if self.self_loop else ""
            raise ValueError(
                f"num_matched={num_matched} must be >= num_predictions={num_predictions}{loop}: "
                "every prediction covers at least one matched latent (as the authors' criterion "
                "requires, skips or not)"
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
        """Pair log-probabilities ``a (B, A, M, P)`` and whether each positive beats all negatives.

        ``P = K + self_loop`` predictions, the self-loop (``z_t`` itself) first.
        ``correct[b, t, m, k]`` is true when ``s(q_k, z_{t+m+1})`` is above every negative score
        of ``q_k`` (a detached bool tensor of the same shape).
        """
        extra = None
        if self.self_loop:
            extra = z[:, : z.shape[1] - self.num_matched].unsqueeze(2)  # (B, A, 1, D): z_t
        window, negative = self.core.scores(z, c, self.num_matched, negative_index, extra)
        # window (B, A, P, M), negative (B, A, P, N)
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
        skips = (self.skip_begin, self.skip_end)
        loss = -alignment_log_likelihood(pair, *skips).mean()
        path, _ = viterbi_alignment(pair.detach(), *skips)  # (B, A, M)
        with torch.no_grad():
            acc = correct.gather(-1, path.unsqueeze(-1)).float().mean()
            metrics = {"loss": loss.detach(), "acc": acc, **segment_metrics(path, pair.shape[-1])}
        return ObjectiveOutput(loss=loss, metrics=metrics)


def segment_metrics(path: Tensor, num_predictions: int) -> dict[str, Tensor]:
    """Segments of the best alignments ``path (..., M)`` onto ``num_predictions`` predictions.

    ``segment_length``: mean over anchors of the mean length of the used (non-skipped)
    segments, ``M / used``; ``segment_length_std``: mean over anchors of their spread (std over
    the used segments); ``segments``: mean number of used predictions. Without skips every
    prediction is used, so the mean length is always ``M/K``.
    """
    lengths = torch.zeros(*path.shape[:-1], num_predictions, device=path.device)
    lengths.scatter_add_(-1, path, torch.ones_like(path, dtype=lengths.dtype))  # (..., P)
    used = lengths > 0
    count = used.sum(-1).float()
    mean = path.shape[-1] / count
    spread = ((lengths - mean.unsqueeze(-1)).square() * used).sum(-1) / count
    return {"segment_length": mean.mean(), "segment_length_std": spread.sqrt().mean(),
            "segments": count.mean()}
