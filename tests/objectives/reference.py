"""Plain, slow reference implementations the objective tests compare against.

Written for obviousness, not speed: Python loops over steps, a materialised candidate tensor per
step as CPC_audio builds it, and brute-force enumeration of alignments. Also a tiny stand-in
model (strided convolution + LSTM) so the objective tests need no real encoder.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TinyEncoder(nn.Module):
    """``wav (B, 1, S) -> z (B, S // hop, dim)``: one strided convolution, one frame per hop."""

    def __init__(self, dim: int, hop: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, dim, kernel_size=hop, stride=hop)
        self.dim = dim
        self.hop = hop

    def forward(self, wav: Tensor) -> Tensor:
        return self.conv(wav).transpose(1, 2)


class TinyModel(nn.Module):
    """``wav (B, 1, S) -> (z (B, S // hop, dim), c (B, S // hop, context_dim))``, c causal."""

    def __init__(self, dim: int = 16, context_dim: int = 16, hop: int = 160) -> None:
        super().__init__()
        self.encoder = TinyEncoder(dim, hop)
        self.context = nn.LSTM(dim, context_dim, batch_first=True)
        self.hop = hop

    def forward(self, wav: Tensor) -> tuple[Tensor, Tensor]:
        z = self.encoder(wav)
        c, _ = self.context(z)
        return z, c


def reference_cpc(
    predictions: Tensor, z: Tensor, negative_index: Tensor, scale: float
) -> tuple[Tensor, Tensor]:
    """CPC per step, CPC_audio style: one ``(B, 1+N, A, D)`` candidate tensor per step.

    Args:
        predictions: ``(B, A, K, D)``, anchors ``t = 0 … A−1``.
        z: ``(B, T, D)``.
        negative_index: ``(B, A, N)`` flat indices into ``z.reshape(B·T, D)``.
        scale: score scale.

    Returns:
        ``step_loss (K,)`` (mean cross-entropy over anchors) and ``step_acc (K,)`` (fraction of
        anchors whose positive scores strictly above all negatives).
    """
    B, A, K, D = predictions.shape
    negatives = z.reshape(-1, D)[negative_index].permute(0, 2, 1, 3)  # (B, N, A, D)
    losses, accs = [], []
    for k in range(K):
        positive = z[:, k + 1 : k + 1 + A].unsqueeze(1)  # (B, 1, A, D)
        candidates = torch.cat([positive, negatives], dim=1)  # (B, 1+N, A, D)
        logits = (predictions[:, :, k].unsqueeze(1) * candidates).sum(-1) * scale  # (B, 1+N, A)
        logits = logits.permute(0, 2, 1).reshape(B * A, -1).float()
        labels = torch.zeros(B * A, dtype=torch.long, device=z.device)
        losses.append(F.cross_entropy(logits, labels))
        accs.append((logits[:, 0] > logits[:, 1:].max(dim=1).values).float().mean())
    return torch.stack(losses), torch.stack(accs)


def reference_pair_scores(
    predictions: Tensor, z: Tensor, negative_index: Tensor, num_matched: int, scale: float
) -> tuple[Tensor, Tensor]:
    """Aligned-CPC pair scores by loops over positions and predictions.

    Returns ``pair (B, A, M, K)``, ``pair[b, t, m, k]`` the log-probability of ``z_{t+m+1}``
    among itself and the negatives under prediction k, and ``correct (B, A, M, K)``, whether
    that positive scores strictly above all negatives.
    """
    B, A, K, D = predictions.shape
    negatives = z.reshape(-1, D)[negative_index]  # (B, A, N, D)
    correct = torch.empty(B, A, num_matched, K, dtype=torch.bool)
    pair_rows = []
    for m in range(num_matched):
        row = []
        for k in range(K):
            q = predictions[:, :, k]  # (B, A, D)
            positive = (q * z[:, m + 1 : m + 1 + A]).sum(-1) * scale  # (B, A)
            negative = (q.unsqueeze(2) * negatives).sum(-1) * scale  # (B, A, N)
            logits = torch.cat([positive.unsqueeze(-1), negative], dim=-1).float()
            row.append(logits.log_softmax(-1)[..., 0])
            correct[:, :, m, k] = positive > negative.max(-1).values
        pair_rows.append(torch.stack(row, dim=-1))
    return torch.stack(pair_rows, dim=2), correct


def enumerate_alignments(
    num_matched: int, num_predictions: int, skip_begin: int = 0, skip_end: int = 0
) -> list[tuple[int, ...]]:
    """Every alignment of M latents onto K predictions (0-based), as the latents see it.

    The window is padded with ``skip_begin`` frames before and ``skip_end`` after (the authors'
    skips); a padded path is fixed by choosing the K−1 positions (among 1 … L−1 of the padded
    length L) where the prediction index goes up. Each padded path contributes its latents'
    part, so an alignment of the latents reached by several padded paths appears that often.
    """
    length = skip_begin + num_matched + skip_end
    paths = []
    for rises in itertools.combinations(range(1, length), num_predictions - 1):
        path, state = [], 0
        for m in range(length):
            if m in rises:
                state += 1
            path.append(state)
        paths.append(tuple(path[skip_begin : skip_begin + num_matched]))
    return paths


def path_score(pair: Tensor, path: tuple[int, ...]) -> Tensor:
    """``Σ_m pair[..., m, path[m]]`` for ``pair (..., M, K)``."""
    return sum(pair[..., m, k] for m, k in enumerate(path))


def brute_force_log_likelihood(pair: Tensor, skip_begin: int = 0, skip_end: int = 0) -> Tensor:
    """``log Σ_π exp(Σ_m pair[..., m, π(m)])`` by enumerating every alignment."""
    M, K = pair.shape[-2:]
    paths = enumerate_alignments(M, K, skip_begin, skip_end)
    scores = [path_score(pair, path) for path in paths]
    return torch.logsumexp(torch.stack(scores, dim=-1), dim=-1)


def brute_force_posterior(pair: Tensor, skip_begin: int = 0, skip_end: int = 0) -> Tensor:
    """``P(π(m) = k)`` for ``pair (M, K)``: each alignment's weight summed over its pairs."""
    M, K = pair.shape
    log_z = brute_force_log_likelihood(pair, skip_begin, skip_end)
    posterior = torch.zeros(M, K, dtype=pair.dtype)
    for path in enumerate_alignments(M, K, skip_begin, skip_end):
        weight = torch.exp(path_score(pair, path) - log_z)
        for m, k in enumerate(path):
            posterior[m, k] += weight
    return posterior


def brute_force_best(
    pair: Tensor, skip_begin: int = 0, skip_end: int = 0
) -> tuple[Tensor, list[tuple[int, ...]]]:
    """Best alignment score of ``pair (n, M, K)`` and the best path of each row."""
    M, K = pair.shape[-2:]
    paths = enumerate_alignments(M, K, skip_begin, skip_end)
    scores = torch.stack([path_score(pair, path) for path in paths], dim=-1)  # (n, P)
    best, which = scores.max(dim=-1)
    return best, [paths[i] for i in which.tolist()]
