"""Kernels and HSIC batched over classes: the dependence of ``X`` and ``Z`` within each class.

For each class ``y``, with ``n`` segments: ``K`` a cosine kernel between the segments' inputs,
``L`` an RBF kernel between their targets, and ``HSIC_y = tr(K H L H) / (n - 1)^2`` with the
centring ``H = I - 11^T / n`` (``centring="textbook"``) or the reference code's
``H = I - 11^T / n^2`` (``centring="reference"``). All classes are scored together: padded to a
common size with a mask, in chunks that bound memory. Lower means more useful.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

VARIANCE = 1.0  # RBF variance per z-scored dimension
CENTRINGS = ("textbook", "reference")


def cosine_kernel(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """``K_ij = cos(x_i, x_j)``: ``(..., n, F) -> (..., n, n)``; masked rows and columns 0."""
    x = torch.nn.functional.normalize(x, dim=-1)
    if mask is not None:
        x = x * mask[..., None]
    return x @ x.mT


def _squared_distances(z: Tensor) -> Tensor:
    sq = z.pow(2).sum(-1)
    return (sq[..., :, None] + sq[..., None, :] - 2.0 * z @ z.mT).clamp_min(0.0)


def rbf_kernel(z: Tensor, variance: float | str = VARIANCE, mask: Tensor | None = None,
               per_dimension: bool = True) -> Tensor:
    """``L_ij = exp(-|z_i - z_j|^2 / (2 h))``: ``(..., n, D) -> (..., n, n)``.

    ``variance`` a number: ``h = variance * D`` with ``per_dimension`` (a fixed variance per
    dimension), else ``h = variance`` (the reference's ``0.05`` whatever ``D``).
    ``variance="median"``: ``h`` = the median squared distance between distinct valid rows of
    each matrix (the median heuristic; 1 where all rows coincide). Masked rows and columns 0.
    """
    d2 = _squared_distances(z)
    n = z.shape[-2]
    if mask is None:
        mask = torch.ones(z.shape[:-1], dtype=torch.bool, device=z.device)
    pair = mask[..., :, None] & mask[..., None, :]
    if variance == "median":
        off = pair & ~torch.eye(n, dtype=torch.bool, device=z.device)
        h = torch.where(off, d2, torch.full_like(d2, float("nan"))).flatten(-2).nanmedian(-1)[0]
        h = torch.where(h.isfinite() & (h > 0), h, torch.ones_like(h))[..., None, None]
    elif isinstance(variance, (int, float)) and variance > 0:
        h = float(variance) * (z.shape[-1] if per_dimension else 1)
    else:
        raise ValueError(f"variance must be a positive number or 'median', got {variance!r}")
    return torch.exp(-d2 / (2.0 * h)) * pair


def _check_centring(centring: str) -> None:
    if centring not in CENTRINGS:
        raise ValueError(f"centring must be one of {CENTRINGS}, got {centring!r}")


def centre_kernel(K: Tensor, mask: Tensor | None = None, centring: str = "textbook") -> Tensor:
    """``H K H`` over the valid rows (``mask`` ``(..., n)``) of each ``(..., n, n)`` matrix;
    masked rows and columns stay 0.

    ``centring="textbook"``: ``H = I - 11^T / n``. ``centring="reference"``: the reference code's
    ``H = I - 11^T / n^2``, which does not remove the means (``H`` is not a projection).
    """
    _check_centring(centring)
    if mask is None:
        mask = torch.ones(K.shape[:-1], dtype=torch.bool, device=K.device)
    m = mask.to(K.dtype)
    n = m.sum(-1).clamp_min(1.0)[..., None]
    a = 1.0 / n if centring == "textbook" else 1.0 / n**2  # (..., 1): the off-diagonal of -H
    row = (K * m[..., None, :]).sum(-1) * a  # (..., n)
    total = (row * m).sum(-1, keepdim=True) * a
    centred = K - row[..., :, None] - row[..., None, :] + total[..., None]
    return centred * (m[..., :, None] * m[..., None, :])


def hsic(K: Tensor, L: Tensor, mask: Tensor | None = None, centring: str = "textbook") -> Tensor:
    """``tr(K H L H) / (n - 1)^2`` per matrix: ``(..., n, n)`` pairs -> ``(...)``.

    ``n`` is the number of valid rows; ``K`` and ``L`` must be zero outside them and symmetric.
    By the trace's cyclic property ``tr(K H L H) = tr(H K H L) = sum_ij (H K H)_ij L_ij``.
    ``centring``: see :func:`centre_kernel` (both divide by ``(n - 1)^2``).
    """
    n = K.shape[-1] if mask is None else mask.sum(-1).to(K.dtype)
    n = torch.as_tensor(n, dtype=K.dtype, device=K.device)
    return (centre_kernel(K, mask, centring) * L).sum((-2, -1)) / (n - 1.0).clamp_min(1.0) ** 2


@dataclass
class UtilityEstimate:
    """Conditional dependence of ``X`` and ``Z`` given ``Y`` for one pseudo-label.

    Attributes:
        name: the pseudo-label.
        uniform: mean over the scored classes of their HSIC (lower: more useful).
        weighted: the same, weighted by each class's number of usable segments.
        per_class: ``{class: HSIC}`` of every scored class.
        class_sizes: ``{class: usable segments}`` (before the cap) of every scored class.
        num_segments: segments scored (after the cap).
        num_dropped: segments dropped because ``Z`` is undefined (NaN) throughout them.
        skipped_classes: classes with fewer than ``min_class_size`` usable segments.
        seconds: time the estimate took.
    """

    name: str
    uniform: float
    weighted: float
    per_class: dict[int, float] = field(default_factory=dict)
    class_sizes: dict[int, int] = field(default_factory=dict)
    num_segments: int = 0
    num_dropped: int = 0
    skipped_classes: list[int] = field(default_factory=list)
    seconds: float = 0.0


def _class_table(labels: Tensor, keys: Tensor, cap: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Classes ``(C,)``, their sizes, and per class the row indices ``(C, n)`` of at most
    ``cap`` segments (the smallest keys) with a validity mask, classes by decreasing size."""
    classes, sizes = labels.unique(return_counts=True)
    order = torch.argsort(keys, stable=True)
    order = order[torch.argsort(labels[order], stable=True)]  # by class, then by key
    starts = torch.cumsum(sizes, 0) - sizes
    rank = torch.argsort(sizes, descending=True, stable=True)
    classes, sizes, starts = classes[rank], sizes[rank], starts[rank]
    width = min(int(sizes.max()), cap)
    position = torch.arange(width)
    mask = position[None] < sizes.clamp_max(cap)[:, None]
    index = order[(starts[:, None] + position[None]).clamp_max(labels.numel() - 1)]
    return classes, sizes, torch.where(mask, index, torch.zeros_like(index)), mask


def conditional_dependence(
    inputs: Tensor,
    targets: Tensor,
    labels: Tensor,
    keys: Tensor | None = None,
    *,
    name: str = "",
    max_per_class: int = 500,
    min_class_size: int = 4,
    variance: float | str = VARIANCE,
    per_dimension: bool = True,
    standardize_targets: bool = True,
    centring: str = "textbook",
    seed: int = 0,
    device: str | torch.device = "cpu",
    max_elements: int = 1 << 24,
) -> UtilityEstimate:
    """HSIC of inputs and targets within each class, averaged over classes.

    Args:
        inputs: ``(S, F)`` or ``(S, P, F)`` segment inputs ``X`` (e.g. resampled log-mel).
        targets: ``(S,)`` or ``(S, D)`` segment pseudo-labels ``Z`` (e.g. segment means); rows
            with a NaN are dropped and counted; the rest are z-scored per dimension (unless
            ``standardize_targets`` is false: already scaled, as the reference setting's).
        labels: ``(S,)`` integer classes ``Y``.
        keys: ``(S,)`` integer keys that choose the segments kept in a class larger than
            ``max_per_class`` (smallest first); default: a seeded random draw in input order.
            Pass :meth:`Segments.keys` to make the result independent of the segments' order.
        max_per_class: cap on the segments scored per class (cost grows with its square).
        min_class_size: classes with fewer usable segments are skipped.
        variance, per_dimension: the RBF kernel's (:func:`rbf_kernel`).
        centring: ``"textbook"`` or ``"reference"`` (:func:`centre_kernel`).
        device: where the kernels are computed.
        max_elements: bound on the kernel entries held at once (classes are done in chunks).
    """
    began = time.perf_counter()
    _check_centring(centring)
    if max_per_class < 2 or min_class_size < 2:
        raise ValueError(f"need max_per_class >= 2 and min_class_size >= 2, got "
                         f"{max_per_class} and {min_class_size}")
    x = inputs.flatten(1) if inputs.dim() > 2 else inputs
    z = targets[:, None] if targets.dim() == 1 else targets
    labels = torch.as_tensor(labels).long()
    if not (x.shape[0] == z.shape[0] == labels.shape[0]):
        raise ValueError(f"inputs, targets and labels disagree on the number of segments: "
                         f"{x.shape[0]}, {z.shape[0]}, {labels.shape[0]}")
    if keys is None:
        keys = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(seed))
    keys = torch.as_tensor(keys).long()
    usable = z.isfinite().all(-1)
    num_dropped = int((~usable).sum())
    if not bool(usable.any()):
        return UtilityEstimate(name, float("nan"), float("nan"), num_dropped=num_dropped,
                               skipped_classes=sorted(int(c) for c in labels.unique()),
                               seconds=time.perf_counter() - began)
    x, z, labels, keys = x[usable], z[usable].double(), labels[usable], keys[usable]
    if standardize_targets:
        var, mean = torch.var_mean(z, dim=0, correction=0)
        z = (z - mean) / var.sqrt().clamp_min(1e-12)
    z = z.float()

    classes, sizes, index, mask = _class_table(labels, keys, max_per_class)
    scored = sizes >= min_class_size
    skipped = sorted(int(c) for c in classes[~scored])
    classes, sizes, index, mask = classes[scored], sizes[scored], index[scored], mask[scored]
    values = torch.zeros(classes.shape[0], dtype=torch.float64)
    first = 0
    while first < classes.shape[0]:  # chunks of classes, largest first, padded to the largest
        width = int(mask[first].sum())
        count = max(1, max_elements // max(width * width, 1))
        chunk = slice(first, first + count)
        m = mask[chunk, :width].to(device)
        rows = index[chunk, :width]
        K = cosine_kernel(x[rows].to(device).float(), m)
        L = rbf_kernel(z[rows].to(device), variance, m, per_dimension)
        values[chunk] = hsic(K.double(), L.double(), m, centring).cpu()
        first += count
    weights = sizes.double()
    uniform = float(values.mean()) if values.numel() else float("nan")
    weighted = float((values * weights).sum() / weights.sum()) if values.numel() else float("nan")
    return UtilityEstimate(
        name=name, uniform=uniform, weighted=weighted,
        per_class={int(c): float(v) for c, v in zip(classes, values)},
        class_sizes={int(c): int(s) for c, s in zip(classes, sizes)},
        num_segments=int(mask.sum()), num_dropped=num_dropped, skipped_classes=skipped,
        seconds=time.perf_counter() - began,
    )

