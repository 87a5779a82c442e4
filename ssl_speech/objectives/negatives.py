"""Negative sampling shared by the contrastive objectives.

Negatives are drawn once per anchor and shared by all prediction steps (CPC_audio's scheme), as
flat indices into the batch's latents ``z.reshape(B * T, D)``: one index tensor ``(B, A, N)``
for ``A`` anchors per sequence (anchor ``a`` is frame ``t = a``) and ``N`` negatives each. The
objectives score predictions against these indices with matrix products
(:mod:`ssl_speech.objectives.scores`), so the ``(B, A, N, D)`` negatives tensor need never exist;
:func:`gather_negatives` builds it for references and diagnostics.

Modes:

- ``"batch"``: uniform over all ``B·T`` latents of the batch, other sequences and other times
  (CPC_audio's default). Batches hold one speaker by default, so negatives are within-speaker.
- ``"sequence"``: uniform over the ``T`` latents of the anchor's own sequence.

``exclude_positive=True`` keeps every positive out of the negatives. Because one draw serves all
steps, it removes the anchor's whole prediction window: for anchor ``(b, t)`` and ``num_steps``
K, frames ``(b, t+1) … (b, t+K)`` are never drawn; every other allowed frame stays equally
likely (the draw is uniform over the ``B·T − K`` or ``T − K`` remaining frames, made exact by
drawing below the reduced count and shifting past the window). The anchor's own frame ``t`` and
frames beyond ``t+K`` remain possible. Without exclusion a negative may coincide with the
positive (probability ``1/(B·T)`` per draw in batch mode), as in CPC_audio.

Across ranks (``negatives_across_ranks=True`` in the objectives): under DDP each rank draws by
default from its own batch, as CPC_audio does. :func:`negative_pool` can instead gather the
latents of every rank (with gradients flowing back to their owners), so batch-mode negatives
come from ``world_size·B·T`` latents. The trade-off: one all-gather of ``B·T·D`` latents per
step and a ``world_size`` times larger score matrix, for more and more diverse negatives; but
since each rank's batch holds one speaker, pooled negatives are mostly *other speakers*, which
lets the model win by speaker cues and weakens the within-speaker contrast that favours phonetic
features. Keep it off unless batches are uniform across speakers.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

NEGATIVE_MODES = ("batch", "sequence")


def check_mode(mode: str) -> str:
    """Validate a negative-sampling mode name and return it."""
    if mode not in NEGATIVE_MODES:
        raise ValueError(f"unknown negative sampling mode {mode!r}; use one of {NEGATIVE_MODES}")
    return mode


def sample_negative_indices(
    batch_size: int,
    num_frames: int,
    num_negatives: int,
    num_anchors: int | None = None,
    mode: str = "batch",
    exclude_positive: bool = False,
    num_steps: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    pool_sequences: int | None = None,
    sequence_offset: int = 0,
) -> Tensor:
    """Draw negatives for every anchor as flat indices into ``z.reshape(B * T, D)``.

    Args:
        batch_size: B sequences.
        num_frames: T frames per sequence.
        num_negatives: N negatives per anchor, drawn with replacement.
        num_anchors: A anchors per sequence, frames ``0 … A−1``; default ``T``.
        mode: ``"batch"`` or ``"sequence"`` (module docstring).
        exclude_positive: never draw the anchor's window ``t+1 … t+num_steps`` of its sequence.
        num_steps: the window length K; required with ``exclude_positive`` (and then
            ``A + K <= T`` so every window lies inside its sequence).
        generator: random source, for reproducible draws (on ``device``).
        device: where the indices live.
        pool_sequences: sequences in the pool drawn from in batch mode (default B); with
            :func:`negative_pool`, the anchors' sequences are ``sequence_offset … +B−1`` of it.
        sequence_offset: position of the anchors' first sequence in the pool.

    Returns:
        ``(B, A, N)`` long tensor; ``b·T + s`` addresses frame ``s`` of sequence ``b``.
    """
    check_mode(mode)
    for name, value in (
        ("batch_size", batch_size),
        ("num_frames", num_frames),
        ("num_negatives", num_negatives),
    ):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    A = num_frames if num_anchors is None else num_anchors
    if not 1 <= A <= num_frames:
        raise ValueError(f"num_anchors must be in [1, num_frames={num_frames}], got {A}")
    B, T, N = batch_size, num_frames, num_negatives
    P = B if pool_sequences is None else pool_sequences
    if not 0 <= sequence_offset <= P - B:
        raise ValueError(f"sequence_offset={sequence_offset} puts the {B} anchor sequences "
                         f"outside the pool of {P}")
    K = 0
    if exclude_positive:
        if num_steps is None or num_steps < 1:
            raise ValueError(
                f"exclude_positive needs the prediction window num_steps >= 1, got {num_steps!r}"
            )
        K = num_steps
        if A + K > T:
            raise ValueError(
                f"num_anchors={A} + num_steps={K} exceeds num_frames={T}: the excluded window "
                "of the last anchors would leave the sequence; use at most T - K anchors"
            )
        if mode == "sequence" and T - K < 1:
            raise ValueError(f"no frame is left to draw: num_frames={T}, num_steps={K}")

    high = (P * T if mode == "batch" else T) - K
    draw = torch.randint(0, high, (B, A, N), generator=generator, device=device)
    anchor = torch.arange(A, device=device).view(1, A, 1)
    sequence = torch.arange(sequence_offset, sequence_offset + B, device=device).view(B, 1, 1)
    if mode == "batch":
        window_start = sequence * T + anchor + 1
        if K:
            draw = draw + K * (draw >= window_start)  # skip the K excluded frames
        return draw
    if K:
        draw = draw + K * (draw >= anchor + 1)
    return draw + sequence * T


def negative_pool(z: Tensor, across_ranks: bool = False) -> tuple[Tensor, int]:
    """The latents ``(P, T, D)`` negatives are drawn from, and where this rank's ``z`` sits.

    Without ``across_ranks`` (or outside DDP) that is ``z`` itself at offset 0. With it, the
    latents of all ranks in rank order, gathered with autograd so that each rank's negatives send
    gradients back to the rank that produced them; the offset is ``rank · B``. Every rank must
    call it at the same point of its step (it is a collective).
    """
    if not across_ranks or not dist.is_available() or not dist.is_initialized():
        return z, 0
    world = dist.get_world_size()
    if world == 1:
        return z, 0
    from torch.distributed.nn.functional import all_gather

    parts = all_gather(z.contiguous())
    return torch.cat(parts, dim=0), dist.get_rank() * z.shape[0]


def gather_negatives(z: Tensor, index: Tensor) -> Tensor:
    """Materialise the negatives: ``z (B, T, D)``, ``index (B, A, N)`` -> ``(B, A, N, D)``."""
    return z.reshape(-1, z.shape[-1])[index]
