"""The batch that flows from the data pipeline to the objectives."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Batch:
    """A batch of fixed-length training windows.

    Attributes:
        wav: ``(B, 1, S)`` float32 waveform at 16 kHz.
        speaker: ``(B,)`` long speaker index (position in the corpus speaker list).
        phones: optional ``(B, S // 160)`` long frame labels at 100 Hz, ``-100`` where unknown.
            Label frame ``i`` covers samples ``[160 i, 160 i + 160)`` of the window.
        start: optional ``(B,)`` long sample offset of each window in its utterance.
        utt: optional utterance ids, one per window.
        skipped: ``(path, reason)`` of each window of this batch that could not be read (its
            file vanished, was truncated or replaced since the scan, or holds NaN/Inf samples)
            and was left out; ``len(skipped)`` windows fewer than the sampler planned. A batch
            whose every window failed has ``size == 0``.
    """

    wav: Tensor
    speaker: Tensor
    phones: Tensor | None = None
    start: Tensor | None = None
    utt: list[str] | None = field(default=None)
    skipped: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.wav.dim() != 3 or self.wav.shape[1] != 1:
            raise ValueError(f"Batch.wav must be (batch, 1, samples), got {tuple(self.wav.shape)}")
        if self.speaker.shape != (self.wav.shape[0],):
            raise ValueError(
                f"Batch.speaker must be ({self.wav.shape[0]},), got {tuple(self.speaker.shape)}"
            )

    @property
    def size(self) -> int:
        return self.wav.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return Batch(
            wav=self.wav.to(device, non_blocking=non_blocking),
            speaker=self.speaker.to(device, non_blocking=non_blocking),
            phones=move(self.phones),
            start=move(self.start),
            utt=self.utt,
            skipped=self.skipped,
        )

    def pin_memory(self) -> Batch:
        """Called by ``DataLoader(pin_memory=True)``."""
        return Batch(
            wav=self.wav.pin_memory(),
            speaker=self.speaker.pin_memory(),
            phones=None if self.phones is None else self.phones.pin_memory(),
            start=None if self.start is None else self.start.pin_memory(),
            utt=self.utt,
            skipped=self.skipped,
        )
