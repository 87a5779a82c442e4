"""InfoNCE with cosine similarity and a temperature, and its two-view form NT-Xent.

NT-Xent is SimCLR's loss (Chen et al. 2020, "A Simple Framework for Contrastive Learning of
Visual Representations", section 2.1): ``2N`` views, two per example; each view must pick its
partner among the other ``2N − 1`` by cosine similarity over a temperature τ,

    ℓ(i, j) = −log exp(sim(i, j)/τ) / Σ_{k ≠ i} exp(sim(i, k)/τ),

averaged over all ``2N`` ordered positive pairs. :func:`cosine_info_nce` is the general form
(queries against a set of keys, one positive each, some keys excluded); the masked span
contrast of MGF uses it directly.

The similarities and the softmax run in float32 even under autocast: τ = 0.1 turns a bf16
rounding of the cosine into a visible error in the logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cosine_info_nce(
    queries: Tensor,
    keys: Tensor,
    targets: Tensor,
    temperature: float,
    exclude: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Cross-entropy picking each query's positive key by cosine similarity / τ.

    Args:
        queries: ``(M, E)``.
        keys: ``(K, E)``.
        targets: ``(M,)`` long, the index of each query's positive key.
        temperature: τ > 0.
        exclude: optional ``(M, K)`` bool, keys left out of a query's candidates (neither
            positive nor negative). A query's own positive must not be excluded.

    Returns:
        ``(loss, accuracy)``: the mean cross-entropy over queries, and the fraction of queries
        whose positive scores strictly above every other candidate (detached).
    """
    if queries.dim() != 2 or keys.dim() != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(
            f"cosine_info_nce: queries (M, E) and keys (K, E) need the same E, got "
            f"{tuple(queries.shape)} and {tuple(keys.shape)}"
        )
    if targets.shape != queries.shape[:1]:
        raise ValueError(
            f"cosine_info_nce: targets must be ({queries.shape[0]},), got {tuple(targets.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"cosine_info_nce: temperature must be > 0, got {temperature}")
    with torch.autocast(device_type=queries.device.type, enabled=False):
        q = F.normalize(queries.float(), dim=-1)
        k = F.normalize(keys.float(), dim=-1)
        logits = q @ k.T / temperature  # (M, K)
        rows = torch.arange(len(targets), device=targets.device)
        if exclude is not None:
            if exclude.shape != logits.shape:
                raise ValueError(
                    f"cosine_info_nce: exclude must be {tuple(logits.shape)}, got "
                    f"{tuple(exclude.shape)}"
                )
            if exclude[rows, targets].any():
                raise ValueError("cosine_info_nce: a query's positive key is excluded")
            logits = logits.masked_fill(exclude, float("-inf"))
        loss = F.cross_entropy(logits, targets)
        with torch.no_grad():
            positive = logits[rows, targets]
            others = logits.index_put((rows, targets), positive.new_tensor(float("-inf")))
            accuracy = (positive > others.amax(dim=1)).float().mean()
    return loss, accuracy


def nt_xent(
    first: Tensor,
    second: Tensor,
    temperature: float,
    groups: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """SimCLR's NT-Xent over two views of ``N`` examples.

    Args:
        first, second: ``(N, E)`` the two views; row ``i`` of each comes from example ``i``.
        temperature: τ > 0.
        groups: optional ``(N,)`` ids: views of two different examples with the same id (two
            windows of one utterance, say) are not used as negatives of each other.

    Returns:
        ``(loss, accuracy)`` averaged over the ``2N`` views; accuracy counts a view as right
        when its partner is strictly the most similar of its candidates.
    """
    if first.shape != second.shape or first.dim() != 2:
        raise ValueError(
            f"nt_xent: the two views must both be (N, E), got {tuple(first.shape)} and "
            f"{tuple(second.shape)}"
        )
    N = first.shape[0]
    views = torch.cat([first, second])  # (2N, E): view i and view i + N are partners
    index = torch.arange(2 * N, device=views.device)
    targets = (index + N) % (2 * N)
    exclude = index[:, None] == index[None, :]
    if groups is not None:
        if groups.shape != (N,):
            raise ValueError(f"nt_xent: groups must be ({N},), got {tuple(groups.shape)}")
        group = torch.cat([groups, groups]).to(views.device)
        same = group[:, None] == group[None, :]
        exclude = exclude | (same & (index[None, :] != targets[:, None]))
    return cosine_info_nce(views, views, targets, temperature, exclude)
