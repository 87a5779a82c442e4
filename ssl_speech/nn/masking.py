"""Span masking of latent frames with a learned mask vector (wav2vec 2.0, section 3.1).

Masked objectives (MGF, TriNet) hide spans of the encoder output ``z`` before the context
network and ask for what was hidden. :class:`SpanMasker` draws the spans and replaces the
masked frames by one learned vector; :class:`SpanMask` carries the result: the masked
sequence, the boolean frame mask and the span boundaries (all in frames).

Sampling, per sequence of ``T`` frames (``L = span``, ``p = mask_prob``):

1. Every frame ``s`` in ``[0, T − L]`` (spans never run past the end) is a span start with
   probability ``p``, independently; if fewer than ``min_spans`` starts came up, random extra
   starts are added up to ``min_spans``.
2. Span ``[s, s + L)`` is masked for every start ``s``. Spans may overlap, so the expected masked
   fraction of a frame far from the edges is ``1 − (1 − p)^L`` (0.49 for ``p = 0.065``,
   ``L = 10``), not ``p · L``; frames within ``L − 1`` of either end can be covered by fewer
   starts and are masked less often. :meth:`SpanMasker.expected_fraction` gives the exact
   mean over the ``T`` frames for steps 1–2.
3. The whole sequence is never masked: if fewer than ``min_unmasked`` frames stay visible, spans
   are dropped in random order until at least ``min_unmasked`` are (if even one span leaves
   fewer, i.e. ``T − L < min_unmasked``, nothing is masked). This guarantee wins over
   ``min_spans``.

Everything is vectorised over the batch; with a ``torch.Generator`` the draws are
deterministic. Masking happens whenever the masker is called, in training and eval mode alike
(a masked objective's validation loss needs its masks); the caller decides when to call it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class SpanMask:
    """A masked sequence and where it was masked.

    Attributes:
        x: ``(B, T, D)`` the input with masked frames replaced by the mask vector.
        mask: ``(B, T)`` bool, ``True`` on masked frames.
        starts: ``(B, S)`` long, the first frame of each span, sorted per sequence; ``S`` is the
            largest span count in the batch and the padding entries hold ``0``.
        valid: ``(B, S)`` bool, ``True`` for real spans (the rest is padding).
        span: span length ``L`` in frames: span ``j`` of sequence ``b`` is the frames
            ``[starts[b, j], starts[b, j] + L)``. Spans of one sequence may overlap.
    """

    x: Tensor
    mask: Tensor
    starts: Tensor
    valid: Tensor
    span: int

    @property
    def ends(self) -> Tensor:
        """``(B, S)`` long, one past the last frame of each span."""
        return self.starts + self.span

    def pool(self, features: Tensor) -> Tensor:
        """Mean of ``features`` ``(B, T, C)`` over each span: ``(B, S, C)``, zeros on padding."""
        B, S = self.starts.shape
        if features.dim() != 3 or features.shape[:2] != self.mask.shape:
            raise ValueError(
                f"SpanMask.pool expects features (batch, frames, channels) matching the mask "
                f"{tuple(self.mask.shape)}, got {tuple(features.shape)}"
            )
        C = features.shape[-1]
        if S == 0:
            return features.new_zeros(B, 0, C)
        offsets = torch.arange(self.span, device=self.starts.device)
        index = (self.starts[..., None] + offsets).clamp_max(features.shape[1] - 1)
        frames = features.gather(1, index.reshape(B, S * self.span, 1).expand(-1, -1, C))
        pooled = frames.view(B, S, self.span, C).mean(dim=2)
        return pooled * self.valid[..., None].to(pooled.dtype)


class SpanMasker(nn.Module):
    """Masks random spans of a frame sequence with a learned vector (see the module docstring).

    Args:
        dim: feature size D of the sequences to mask (the mask vector's size).
        mask_prob: probability ``p`` that a frame starts a span, in ``[0, 1]``.
        span: span length ``L`` in frames (>= 1).
        min_unmasked: frames that always stay visible in every sequence (>= 1).
        min_spans: starts added at random where fewer came up (>= 0; 0 keeps pure Bernoulli
            draws, for which :meth:`expected_fraction` is exact).

    ``forward(x (B, T, D), generator=None) -> SpanMask``.
    """

    def __init__(
        self,
        dim: int,
        mask_prob: float = 0.065,
        span: int = 10,
        min_unmasked: int = 1,
        min_spans: int = 0,
    ) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"SpanMasker: dim must be >= 1, got {dim}")
        if not 0.0 <= mask_prob <= 1.0:
            raise ValueError(f"SpanMasker: mask_prob is a probability in [0, 1], got {mask_prob}")
        if span < 1:
            raise ValueError(f"SpanMasker: span must be >= 1 frame, got {span}")
        if min_unmasked < 1:
            raise ValueError(
                f"SpanMasker: min_unmasked must be >= 1 so that no sequence is masked whole, "
                f"got {min_unmasked}"
            )
        if min_spans < 0:
            raise ValueError(f"SpanMasker: min_spans must be >= 0, got {min_spans}")
        self.dim = dim
        self.mask_prob = float(mask_prob)
        self.span = span
        self.min_unmasked = min_unmasked
        self.min_spans = min_spans
        # Uniform in [0, 1) as wav2vec 2.0; trained through the context network.
        self.mask_embedding = nn.Parameter(torch.empty(dim).uniform_())

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, mask_prob={self.mask_prob}, span={self.span}, "
            f"min_unmasked={self.min_unmasked}, min_spans={self.min_spans}"
        )

    def expected_fraction(self, length: int) -> float:
        """Expected masked fraction of a ``length``-frame sequence under Bernoulli starts.

        Frame ``t`` is covered by the starts ``max(0, t − L + 1) … min(t, T − L)``, ``n_t`` of
        them, so it is masked with probability ``1 − (1 − p)^{n_t}``; this is the mean over
        ``t``. It leaves out ``min_spans`` and the ``min_unmasked`` trimming (both rare at
        training lengths); it tends to ``1 − (1 − p)^L`` as ``T`` grows.
        """
        if length < 1:
            raise ValueError(f"expected_fraction: length must be >= 1, got {length}")
        if length - self.span < self.min_unmasked:
            return 0.0
        t = torch.arange(length, dtype=torch.float64)
        covering = torch.minimum(t, torch.tensor(length - self.span, dtype=torch.float64))
        covering = covering - (t - self.span + 1).clamp_min(0) + 1
        return float((1.0 - (1.0 - self.mask_prob) ** covering).mean())

    def sample(
        self,
        batch: int,
        length: int,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Draw spans for ``batch`` sequences of ``length`` frames.

        Returns ``(mask (B, T) bool, starts (B, S) long, valid (B, S) bool)`` as in
        :class:`SpanMask`. Memory is ``O(B · S · T)`` booleans for the ``min_unmasked`` check.
        """
        L = self.span
        candidates = length - L + 1  # possible starts 0 … T − L
        if batch < 0 or length < 0:
            raise ValueError(f"SpanMasker.sample: need batch, length >= 0, got {batch}, {length}")
        if length - L < self.min_unmasked:
            empty = torch.zeros(batch, 0, dtype=torch.long, device=device)
            mask = torch.zeros(batch, length, dtype=torch.bool, device=device)
            return mask, empty, empty.bool()
        is_start = torch.rand(batch, candidates, device=device, generator=generator)
        is_start = is_start < self.mask_prob
        priority = torch.rand(batch, candidates, device=device, generator=generator)
        if self.min_spans > 0:
            # Drawn starts first, then the others in random order: the first
            # max(count, min_spans) of that order are the starts.
            order = torch.where(is_start, -1.0, priority).argsort(dim=1)
            rank = order.argsort(dim=1)
            count = is_start.sum(dim=1, keepdim=True).clamp_min(self.min_spans)
            is_start = rank < count
        # The starts in random order (the order in which spans are dropped from the back).
        count = is_start.sum(dim=1)
        S = int(count.max()) if batch else 0
        order = torch.where(is_start, priority, 2.0).argsort(dim=1)[:, :S]
        valid = torch.arange(S, device=device) < count[:, None]
        frames = torch.arange(length, device=device)
        cover = (frames >= order[..., None]) & (frames < order[..., None] + L) & valid[..., None]
        covered = cover.cummax(dim=1).values.sum(dim=-1)  # (B, S): frames under spans 0 … j
        keep = valid & (length - covered >= self.min_unmasked)
        mask = (cover & keep[..., None]).any(dim=1)
        # Sorted by position, padding last, trimmed to the largest kept count.
        starts, position = torch.where(keep, order, length).sort(dim=1)
        kept = keep.gather(1, position)
        S = int(kept.sum(dim=1).max()) if batch else 0
        starts, kept = starts[:, :S], kept[:, :S]
        return mask, starts.masked_fill(~kept, 0), kept

    def apply(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x`` ``(B, T, D)`` with the frames where ``mask`` ``(B, T)`` is set replaced."""
        return torch.where(mask[..., None], self.mask_embedding.to(x.dtype), x)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> SpanMask:
        """Mask ``x``: ``(B, T, D)`` -> :class:`SpanMask`."""
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(
                f"SpanMasker expects (batch, frames, {self.dim}), got {tuple(x.shape)}"
            )
        B, T, _ = x.shape
        mask, starts, valid = self.sample(B, T, device=x.device, generator=generator)
        return SpanMask(self.apply(x, mask), mask, starts, valid, self.span)
