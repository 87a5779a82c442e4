"""Collapse diagnostics for every objective: per-dimension spread, effective rank, class usage.

Self-supervised objectives can collapse: completely (every frame maps to nearly the same
vector, so the per-dimension std goes to 0) or slowly (the frames fill an ever smaller
subspace, so the effective rank falls while the std may stay fine). Class-based targets
collapse by using few classes (the usage entropy falls). The trainer computes these metrics
every ``trainer.diagnostics_every`` steps on a few thousand recent frames, logs them as
``diag/<features>/<metric>``, and stops the run when one falls below a threshold of
``trainer.collapse`` (:class:`CollapseThresholds`).

Which frames: an objective may define ``diagnostic_features() -> dict[str, Tensor]`` returning
its last batch's frames, float ``(N, dim)`` for vectors (predictions, targets, layers) or
integer ``(N,)`` for class assignments; otherwise the trainer uses the model's ``z`` (encoder)
and ``c`` (context) on its recent batches.

Metrics (all computed on the device, returned as 0-dim tensors):

- :func:`mean_std`: the std of each dimension over the frames, averaged over dimensions.
- :func:`effective_rank`: ``exp(H(p))`` with ``p = σ / Σσ`` the normalised singular values of
  the ``(N, dim)`` frame matrix (Roy & Vetterli, 2007; RankMe, Garrido et al., 2023). Between 1
  and ``min(N, dim)``; equal to ``r`` for a matrix with ``r`` equal non-zero singular values.
  The frames are not centred by default (RankMe), so a collapse onto one constant vector gives
  1 rather than an undefined value.
- :func:`usage_entropy`: the entropy (nats) of the empirical class distribution; ``log C`` when
  ``C`` classes are used equally, 0 when one class takes every frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor


def _check_frames(x: Tensor, owner: str) -> Tensor:
    if x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"{owner} expects float frames (N, dim), got {x.dtype} "
                         f"{tuple(x.shape)}")
    return x.float()


def mean_std(x: Tensor) -> Tensor:
    """Mean over dimensions of the (biased) std over frames: ``(N, dim)`` -> scalar."""
    x = _check_frames(x, "mean_std")
    return x.std(dim=0, unbiased=False).mean()


def effective_rank(x: Tensor, center: bool = False) -> Tensor:
    """``exp(entropy(σ / Σσ))`` of the singular values ``σ`` of ``x`` ``(N, dim)``; a scalar.

    ``center`` subtracts the mean frame first. An all-zero matrix has effective rank 0.
    """
    x = _check_frames(x, "effective_rank")
    if center:
        x = x - x.mean(dim=0, keepdim=True)
    sigma = torch.linalg.svdvals(x)
    total = sigma.sum()
    p = sigma / total.clamp_min(torch.finfo(sigma.dtype).tiny)
    rank = torch.exp(-torch.special.xlogy(p, p).sum())
    return torch.where(total > 0, rank, torch.zeros_like(rank))


def usage_entropy(classes: Tensor, num_classes: int | None = None) -> Tensor:
    """Entropy in nats of the class frequencies of ``classes`` ``(N,)`` (integers >= 0)."""
    if classes.dim() != 1 or classes.is_floating_point():
        raise ValueError(f"usage_entropy expects integer classes (N,), got {classes.dtype} "
                         f"{tuple(classes.shape)}")
    counts = torch.bincount(classes, minlength=num_classes or 0).float()
    p = counts / counts.sum().clamp_min(1.0)
    return -torch.special.xlogy(p, p).sum()


def collapse_metrics(features: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``<name>/std`` and ``<name>/effective_rank`` of float ``(N, dim)`` frames,
    ``<name>/usage_entropy`` of integer ``(N,)`` classes."""
    out: dict[str, Tensor] = {}
    for name, x in features.items():
        if x.is_floating_point():
            out[f"{name}/std"] = mean_std(x)
            out[f"{name}/effective_rank"] = effective_rank(x)
        else:
            out[f"{name}/usage_entropy"] = usage_entropy(x)
    return out


class FrameBuffer:
    """The newest ``max_frames`` frames of each named feature, over several steps.

    :meth:`add` keeps references only (no copy and no host sync); :meth:`take` concatenates,
    keeps the newest ``max_frames`` rows of each name, and empties the buffer.
    """

    def __init__(self, max_frames: int = 4096) -> None:
        if max_frames < 1:
            raise ValueError(f"FrameBuffer: max_frames must be >= 1, got {max_frames}")
        self.max_frames = max_frames
        self._chunks: dict[str, list[Tensor]] = {}

    def __len__(self) -> int:
        return len(self._chunks)

    def add(self, features: Mapping[str, Tensor]) -> None:
        """Append ``(N, dim)`` float or ``(N,)`` integer frames per name."""
        for name, x in features.items():
            x = x.detach()
            expected = 2 if x.is_floating_point() else 1
            if x.dim() != expected:
                shape = "(N, dim) float" if expected == 2 else "(N,) integer"
                raise ValueError(f"diagnostic feature {name!r}: expected {shape} frames, got "
                                 f"{x.dtype} {tuple(x.shape)}")
            chunks = self._chunks.setdefault(name, [])
            chunks.append(x)
            # Drop the oldest chunks that the newer ones already cover.
            while len(chunks) > 1 and sum(c.shape[0] for c in chunks[1:]) >= self.max_frames:
                chunks.pop(0)

    def take(self) -> dict[str, Tensor]:
        """The buffered frames (newest ``max_frames`` per name); empties the buffer."""
        out = {name: torch.cat(chunks)[-self.max_frames:] for name, chunks in self._chunks.items()}
        self._chunks = {}
        return out


_CHECKS = {  # metric suffix -> (threshold field, words in the message)
    "effective_rank": ("min_effective_rank", "effective rank"),
    "std": ("min_std", "mean per-dimension std"),
    "usage_entropy": ("min_usage_entropy", "class usage entropy"),
}


@dataclass
class CollapseThresholds:
    """Lower bounds on the diagnostics (``trainer.collapse``); ``None`` switches one off.

    Each applies to every feature's metric of its kind: ``min_effective_rank`` to all
    ``*/effective_rank``, ``min_std`` to all ``*/std``, ``min_usage_entropy`` (nats) to all
    ``*/usage_entropy``.
    """

    min_effective_rank: float | None = None
    min_std: float | None = None
    min_usage_entropy: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and not float(value) >= 0:
                raise ValueError(f"trainer.collapse.{f.name} must be >= 0 or null, got {value}")

    @classmethod
    def from_mapping(cls, value: Mapping[str, Any] | CollapseThresholds | None,
                     ) -> CollapseThresholds:
        """From a config mapping (``None`` -> all off); unknown keys are an error."""
        if isinstance(value, CollapseThresholds):
            return value
        raw = dict(value or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"trainer.collapse: unknown keys {unknown}; allowed: {sorted(known)}")
        return cls(**raw)

    @property
    def enabled(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))

    def violation(self, metrics: Mapping[str, float], step: int) -> str | None:
        """A message naming the first metric below its threshold, or ``None``.

        ``metrics``: ``{"diag/<feature>/<metric>": value}`` (the ``diag/`` prefix optional).
        """
        for name, value in metrics.items():
            feature, _, kind = name.removeprefix("diag/").rpartition("/")
            if kind not in _CHECKS:
                continue
            key, words = _CHECKS[kind]
            threshold = getattr(self, key)
            if threshold is not None and value < threshold:
                return (f"collapse: {words} {value:.3g} < {threshold:g} at step {step} "
                        f"({name} of the {feature} frames; threshold trainer.collapse.{key})")
        return None
