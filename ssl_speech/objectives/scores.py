"""Scoring predictions against positives and shared negatives with matrix products.

Shared by CPC, aligned CPC and RPC. For every anchor frame ``t`` of every sequence the objectives
have K predictions ``p_{t,k}`` (D-dimensional) and need their scores ``s(p, z) = scale · p·z``
against two sets of latents:

- the *window*: the next W frames ``z_{t+1} … z_{t+W}`` of the same sequence (CPC's positives
  are its diagonal ``s(p_{t,k}, z_{t+k})`` with ``W = K``; aligned CPC scores every pair),
- the N *negatives* drawn once per anchor by :mod:`ssl_speech.objectives.negatives` and shared
  by all K predictions.

CPC_audio builds, for every step, a ``(B, 1+N, A, D)`` candidate tensor and multiplies it
elementwise with the predictions: K copies of the negatives, all memory traffic. Here the
``W + N`` candidates of an anchor are gathered once and scored by all K predictions in one
batched product ``(B·A, W+N, D) @ (B·A, D, K)`` (``method="gather"``), or the predictions are
multiplied with every latent of the batch ``(B·A·K, D) @ (D, B·T)`` and the candidates' scores
picked out by index (``method="dense"``: ``B·T / (W+N)`` times the arithmetic, no gathered
copy of the latents). At CPC_audio's size (B = 8, T = 128, K = 12, N = 128, D = 256, one CPU
thread) the scores' forward and backward took about 170 ms gathered and 270 ms dense, but
inside the full training step (about 2.6 s) the two were within measurement noise: one large
matrix product runs near peak while the gather is memory-bound and its batched products have
only K columns. Dense stays the default; its score matrix grows as ``B²``, so for large
per-device batches prefer ``"gather"``.

Scores come back in float32 so the log-sum-exp that follows is float32 under autocast.
"""

from __future__ import annotations

import torch
from torch import Tensor

SCORE_METHODS = ("gather", "dense")


def check_method(method: str) -> str:
    """Validate a scoring method name and return it."""
    if method not in SCORE_METHODS:
        raise ValueError(f"unknown scoring method {method!r}; use one of {SCORE_METHODS}")
    return method


def check_features(z: Tensor, c: Tensor, dim: int, context_dim: int, owner: str) -> None:
    """Validate the model's outputs ``z (B, T, dim)`` and ``c (B, T, context_dim)``."""
    if z.dim() != 3 or z.shape[-1] != dim:
        raise ValueError(f"{owner} expects latents z of shape (B, T, {dim}), got {tuple(z.shape)}")
    if c.dim() != 3 or c.shape[-1] != context_dim or c.shape[:2] != z.shape[:2]:
        raise ValueError(
            f"{owner} expects context c of shape {tuple(z.shape[:2]) + (context_dim,)} "
            f"(same batch and frames as z), got {tuple(c.shape)}"
        )


def count_anchors(
    num_frames: int, horizon: int, num_samples: int | None = None, hop: int | None = None
) -> int:
    """Anchors per sequence whose ``horizon`` future frames all exist: ``T − horizon``.

    Args:
        num_frames: T frames per window.
        horizon: how many future frames each anchor needs (K for CPC, M for aligned CPC).
        num_samples: the window length in samples, to name the fix in the error.
        hop: the encoder's samples per frame; estimated as ``num_samples // T`` if not given.

    Raises:
        ValueError: when ``T <= horizon`` (no anchor), naming the window, hop and horizon.
    """
    if num_frames > horizon:
        return num_frames - horizon
    where = f"window of {num_frames} frames"
    fix = f"use windows of at least {horizon + 1} frames or fewer steps"
    if num_samples is not None and hop is None and num_frames > 0:
        hop = num_samples // num_frames
    if num_samples is not None and hop is not None:
        where += f" ({num_samples} samples at hop {hop})"
        fix = f"use windows of at least {(horizon + 1) * hop} samples or fewer steps"
    raise ValueError(f"{where} is too short for {horizon} prediction steps: {fix}")


def window_index(
    batch_size: int,
    num_frames: int,
    num_anchors: int,
    width: int,
    device: torch.device | str | None = None,
) -> Tensor:
    """Flat indices of the next ``width`` frames of each anchor ``t < num_anchors``.

    Returns ``(B, A, W)`` long, entry ``[b, t, w] = b·T + t + w + 1``.
    """
    if num_anchors + width > num_frames:
        raise ValueError(
            f"num_anchors={num_anchors} + width={width} exceeds num_frames={num_frames}"
        )
    base = torch.arange(batch_size, device=device).view(-1, 1, 1) * num_frames
    anchor = torch.arange(num_anchors, device=device).view(1, -1, 1)
    offset = torch.arange(1, width + 1, device=device).view(1, 1, -1)
    return base + anchor + offset


def candidate_scores(
    predictions: Tensor, z: Tensor, index: Tensor, scale: float, method: str = "dense"
) -> Tensor:
    """Score every prediction of an anchor against that anchor's candidate latents.

    Args:
        predictions: ``(B, A, K, D)``, K predictions for each of A anchors per sequence.
        z: ``(B, T, D)`` latents.
        index: ``(B, A, C)`` flat indices into ``z.reshape(B·T, D)``, C candidates per anchor.
        scale: multiplies the dot products (CPC_audio: ``1 / D``).
        method: ``"gather"`` or ``"dense"`` (module docstring); both give the same values.

    Returns:
        ``(B, A, K, C)`` float32, ``out[b, a, k, c] = scale · p_{b,a,k} · z_flat[index[b, a, c]]``.
    """
    check_method(method)
    B, A, K, D = predictions.shape
    C = index.shape[-1]
    if z.dim() != 3 or z.shape[-1] != D:
        raise ValueError(
            f"latents must be (sequences, frames, dim={D}) to match the predictions, "
            f"got {tuple(z.shape)}"
        )
    if index.shape[:2] != (B, A):
        raise ValueError(f"index must be ({B}, {A}, candidates), got {tuple(index.shape)}")
    flat = z.reshape(-1, D)
    # Scale the predictions, the smallest operand: a scale inside the product (its alpha)
    # would cost a pass over the whole (B·A, C, D) candidates' gradient in the backward.
    queries = predictions.reshape(B * A, K, D) * scale
    if method == "gather":
        # One gather of the C candidates per anchor, shared by all K predictions. Candidates
        # on the left: the candidates' gradient then comes out of the product contiguous, as
        # the index_add behind index_select's backward wants it (the other order costs a
        # transposed copy of the whole (B·A, C, D) gradient).
        candidates = flat.index_select(0, index.reshape(-1)).view(B * A, C, D)
        scores = torch.bmm(candidates, queries.transpose(1, 2))  # (B·A, C, K)
        scores = scores.view(B, A, C, K).transpose(-1, -2)
    else:
        every = (queries.reshape(B * A * K, D) @ flat.t()).view(B, A, K, -1)
        scores = every.gather(-1, index.unsqueeze(2).expand(B, A, K, C))
    return scores.float()


def window_and_negative_scores(
    predictions: Tensor,
    z: Tensor,
    negative_index: Tensor,
    width: int,
    scale: float,
    method: str = "dense",
    pool: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Scores against the next ``width`` frames and the shared negatives, in one product.

    Anchors are frames ``0 … A−1`` with ``A = predictions.shape[1]``, so ``A + width <= T``.

    Args:
        predictions: ``(B, A, K, D)``.
        z: ``(B, T, D)``.
        negative_index: ``(B, A, N)`` from :func:`sample_negative_indices`.
        width: W future frames per anchor.
        scale: score scale.
        method: see :func:`candidate_scores`.
        pool: latents ``(P, T, D)`` the negative indices point into, when they are not ``z``
            (negatives gathered across ranks: ``negatives.negative_pool``).

    Returns:
        ``window (B, A, K, W)`` with ``window[..., k, w] = s(p_{t,k}, z_{t+w+1})`` and
        ``negative (B, A, K, N)``, both float32.
    """
    B, A = predictions.shape[:2]
    positive_index = window_index(B, z.shape[1], A, width, device=negative_index.device)
    if pool is not None and pool is not z:
        window = candidate_scores(predictions, z, positive_index, scale, method)
        return window, candidate_scores(predictions, pool, negative_index, scale, method)
    index = torch.cat([positive_index, negative_index], dim=-1)
    scores = candidate_scores(predictions, z, index, scale, method)
    return scores[..., :width], scores[..., width:]


def step_scores(
    predictions: Tensor,
    z: Tensor,
    negative_index: Tensor,
    scale: float,
    method: str = "dense",
    pool: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """CPC-style scores: prediction k of anchor t against ``z_{t+k}`` and against the negatives.

    Args:
        predictions: ``(B, A, K, D)``, step ``k`` (0-based) predicts frame ``t + k + 1``.
        z: ``(B, T, D)`` with ``A + K <= T``.
        negative_index: ``(B, A, N)``.
        scale: score scale.
        method: see :func:`candidate_scores`.
        pool: see :func:`window_and_negative_scores`.

    Returns:
        ``positive (B, A, K)`` and ``negative (B, A, K, N)``, float32.
    """
    K = predictions.shape[2]
    window, negative = window_and_negative_scores(
        predictions, z, negative_index, K, scale, method, pool
    )
    return window.diagonal(dim1=-2, dim2=-1), negative


def info_nce_log_prob(positive: Tensor, negative_logsumexp: Tensor) -> Tensor:
    """Log-probability of the positive among itself and the negatives.

    ``log(e^pos / (e^pos + Σ_n e^neg_n)) = pos − logaddexp(pos, logsumexp_n neg_n)``, computed
    in float32; the two arguments broadcast against each other.
    """
    positive = positive.float()
    return positive - torch.logaddexp(positive, negative_logsumexp.float())


SCORE_SCALES = ("1/dim", "1/sqrt(dim)")


def resolve_score_scale(score_scale: float | str | None, dim: int) -> float:
    """The factor of ``p·z`` in a score: a number, ``"1/dim"`` (CPC_audio's fixed temperature,
    also ``None``) or ``"1/sqrt(dim)"`` (scaled dot product; trains faster at higher rates)."""
    if score_scale is None or score_scale == "1/dim":
        return 1.0 / dim
    if score_scale == "1/sqrt(dim)":
        return dim**-0.5
    if isinstance(score_scale, str):
        raise ValueError(f"score_scale={score_scale!r}: expected a number > 0 or one of "
                         f"{SCORE_SCALES}")
    if not score_scale > 0:
        raise ValueError(f"score_scale must be > 0, got {score_scale!r}")
    return float(score_scale)
