"""Soft and best alignments of M latents onto P predictions, with skips at the window's ends.

Aligned CPC (:mod:`ssl_speech.objectives.aligned_cpc`) scores every pair of a latent ``m`` of an
anchor's window and a prediction ``k``: ``a_{m,k}``, a log-probability. An alignment maps the
window monotonically onto the predictions, each prediction covering consecutive latents. Its
score is the sum of its pairs' scores, and the loss is ``−log Σ_π exp(score(π))``.

Skips, as in the authors' criterion (chorowski-lab/CPC_audio, ``soft_align.py``): the window is
padded with ``skip_begin`` frames before its first latent and ``skip_end`` after its last, every
padding frame scoring 0 for every prediction, and the alignments are the monotonic *surjective*
maps of the padded window onto the P predictions that start at the first and end at the last
(CTC paths with the blank forbidden). A prediction that covers only padding frames is skipped:
up to ``skip_begin`` predictions at the beginning and ``skip_end`` at the end need not cover a
latent. The sum runs over padded paths, so a set of real positions reachable by several padded
paths counts that many times (e.g. with ``skip_begin = 2``, the latents' alignment that skips
exactly the first prediction is reached with the padding aligned (1, 2) or (2, 2)): this is the
reference's weighting, kept as it is. Without skips the alignments are the surjections of the M
latents, and ``M = P`` leaves only the identity.

Functions: :func:`alignment_log_likelihood` (the forward algorithm, a short log-space recursion
in float32), :func:`viterbi_alignment` (the best alignment, for metrics) and
:func:`ctc_alignment_log_likelihood` (the same value through ``ctc_loss``, as the reference
computes it; a cross-check). The gradient of the log-likelihood in ``a_{m,k}`` is the posterior
probability that latent m is aligned to prediction k.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Log-weight of a state the chain cannot be in. Finite so that logaddexp of two of them has a
# finite (zero-weighted) gradient; far below any real path score.
_IMPOSSIBLE = -1e30


def check_skips(skip_begin: int, skip_end: int) -> tuple[int, int]:
    """Validate the skip counts (integers >= 0) and return them."""
    for name, value in (("skip_begin", skip_begin), ("skip_end", skip_end)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return skip_begin, skip_end


def _check_pair_scores(pair: Tensor, skip_begin: int, skip_end: int) -> tuple[int, int]:
    check_skips(skip_begin, skip_end)
    if pair.dim() < 2:
        raise ValueError(f"pair scores must be (..., M, K), got {tuple(pair.shape)}")
    M, K = pair.shape[-2:]
    if M < 1 or K < 1 or M + skip_begin + skip_end < K:
        raise ValueError(
            f"cannot align M={M} latents onto K={K} predictions with {skip_begin} + {skip_end} "
            "skips: need M >= 1, K >= 1 and M + skip_begin + skip_end >= K"
        )
    return M, K


def _padded(pair: Tensor, skip_begin: int, skip_end: int) -> Tensor:
    """``pair`` in at least float32, with zero rows for the padding frames."""
    pair = pair.to(torch.promote_types(pair.dtype, torch.float32))
    if skip_begin or skip_end:
        pair = F.pad(pair, (0, 0, skip_begin, skip_end))
    return pair


def alignment_log_likelihood(pair: Tensor, skip_begin: int = 0, skip_end: int = 0) -> Tensor:
    """Log-sum-exp over all alignments of the summed pair scores (the forward algorithm).

    Args:
        pair: ``(..., M, K)`` scores ``a_{m,k}``; computed in at least float32.
        skip_begin, skip_end: padding frames before and after the window (module docstring).

    Returns:
        ``(...)``: ``log Σ_π exp(Σ_m a_{m,π(m)})`` over the monotonic surjective maps π of the
        padded window onto the K predictions (``π(first) = 1``, ``π(last) = K``).
    """
    _check_pair_scores(pair, skip_begin, skip_end)
    with torch.autocast(pair.device.type, enabled=False):
        pair = _padded(pair, skip_begin, skip_end)
        L, K = pair.shape[-2:]
        fill = pair.new_full((*pair.shape[:-2], 1), _IMPOSSIBLE)
        # alpha[..., k]: log-weight of all partial alignments of positions 1..m ending in k.
        alpha = torch.cat([pair[..., 0, :1], fill.expand(*pair.shape[:-2], K - 1)], dim=-1)
        for m in range(1, L):  # a dozen positions; anchors and states stay vectorised
            advance = torch.cat([fill, alpha[..., :-1]], dim=-1)
            alpha = pair[..., m, :] + torch.logaddexp(alpha, advance)
        return alpha[..., K - 1]


@torch.no_grad()
def viterbi_alignment(
    pair: Tensor, skip_begin: int = 0, skip_end: int = 0
) -> tuple[Tensor, Tensor]:
    """The best alignment and its score.

    Args:
        pair: ``(..., M, K)`` pair scores.
        skip_begin, skip_end: as :func:`alignment_log_likelihood`.

    Returns:
        ``path (..., M)`` long, ``path[..., m]`` the prediction (0-based) aligned to latent m,
        non-decreasing in steps of 0 or 1, from at most ``skip_begin`` to at least
        ``K−1−skip_end`` (from 0 to K−1 without skips); and ``score (...)`` its summed scores.
    """
    M, _ = _check_pair_scores(pair, skip_begin, skip_end)
    with torch.autocast(pair.device.type, enabled=False):
        pair = _padded(pair, skip_begin, skip_end)
        L, K = pair.shape[-2:]
        fill = pair.new_full((*pair.shape[:-2], 1), _IMPOSSIBLE)
        best = torch.cat([pair[..., 0, :1], fill.expand(*pair.shape[:-2], K - 1)], dim=-1)
        advanced = []  # advanced[m-1][..., k]: the best way into state k at m came from k−1
        for m in range(1, L):
            advance = torch.cat([fill, best[..., :-1]], dim=-1)
            moved = advance > best
            advanced.append(moved)
            best = pair[..., m, :] + torch.where(moved, advance, best)
        state = torch.full(pair.shape[:-2], K - 1, dtype=torch.long, device=pair.device)
        path = [state]
        for m in range(L - 1, 0, -1):
            state = state - advanced[m - 1].gather(-1, state.unsqueeze(-1)).squeeze(-1).long()
            path.append(state)
        path = torch.stack(path[::-1], dim=-1)
        return path[..., skip_begin : skip_begin + M], best[..., K - 1]


def ctc_alignment_log_likelihood(pair: Tensor, skip_begin: int = 0, skip_end: int = 0) -> Tensor:
    """:func:`alignment_log_likelihood` through ``torch.nn.functional.ctc_loss``.

    The K predictions are the labels ``1 … K`` and the blank is made impossible, so the CTC
    paths over the padded window are exactly the alignments. Each position's scores are
    normalised before ``ctc_loss`` (its gradient assumes log-probabilities) and the
    normalisers added back. Args and result as :func:`alignment_log_likelihood`.
    """
    _check_pair_scores(pair, skip_begin, skip_end)
    batch_shape = pair.shape[:-2]
    with torch.autocast(pair.device.type, enabled=False):
        padded = _padded(pair, skip_begin, skip_end)
        L, K = padded.shape[-2:]
        flat = padded.reshape(-1, L, K)
        n = flat.shape[0]
        blank = flat.new_full((n, L, 1), _IMPOSSIBLE)
        logits = torch.cat([blank, flat], dim=-1).transpose(0, 1)  # (L, n, 1+K)
        norm = logits.logsumexp(-1, keepdim=True)
        targets = torch.arange(1, K + 1, device=pair.device).expand(n, K)
        nll = F.ctc_loss(
            logits - norm,
            targets,
            torch.full((n,), L, dtype=torch.long),
            torch.full((n,), K, dtype=torch.long),
            blank=0,
            reduction="none",
        )
        return (norm.squeeze(-1).sum(0) - nll).view(batch_shape)
