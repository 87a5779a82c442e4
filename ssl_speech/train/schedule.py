"""Learning-rate schedules: linear warm-up, then constant or cosine decay."""

from __future__ import annotations

import math

import torch


def lr_factor(step: int, warmup_steps: int, total_steps: int, kind: str,
              min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    if kind == "cosine":
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"optim.schedule={kind!r}: expected 'constant' or 'cosine'")


def build_scheduler(optimizer: torch.optim.Optimizer, kind: str = "cosine",
                    warmup_steps: int = 0, total_steps: int = 1,
                    min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    lr_factor(0, warmup_steps, total_steps, kind, min_ratio)  # validates ``kind`` early
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(
            f"schedule needs warmup_steps >= 0 and total_steps >= 1, got {warmup_steps}, "
            f"{total_steps}"
        )
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup_steps, total_steps, kind, min_ratio)
    )
