"""The training loop's settings (the ``trainer`` config group), checked before any data is read.

:meth:`TrainerSettings.from_config` takes the group as the config holds it; the keys the
entry point reads itself (:data:`ENTRY_POINT_KEYS`) are left out. Every check is cheap, so a
typo in ``trainer.precision`` fails in a second, not after the corpus scan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch

from ssl_speech.train.diagnostics import CollapseThresholds

PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}
RESUME_CHANGED = ("refuse", "allow")
# Read by the entry point (process set-up), not by the loop.
ENTRY_POINT_KEYS = ("device", "threads", "resume", "collective_timeout_s")
WANDB_KEYS = ("project", "entity", "name", "group", "tags", "mode", "dir")
WANDB_MODES = ("online", "offline", "disabled")


@dataclass
class TrainerSettings:
    """Loop settings (the ``trainer`` config group), validated on construction."""

    max_steps: int = 1000
    accumulate: int = 1
    precision: str = "32"
    grad_clip: float = 0.0
    log_every: int = 20
    val_every: int = 0
    val_batches: int = 20
    checkpoint_every: int = 500
    keep_last: int = 3
    max_nonfinite: int = 10
    find_unused_parameters: bool = False
    progress: bool = True
    tensorboard: bool = True
    wandb: Any = None  # None (off) or a mapping of WANDB_KEYS
    diagnostics_every: int = 0  # collapse metrics every N steps (0: off)
    diagnostics_steps: int = 4  # ... on the frames of the last steps up to then
    diagnostics_frames: int = 4096  # ... at most this many frames per feature
    collapse: Any = None  # CollapseThresholds or its mapping
    resume_changed: str = "refuse"  # resuming a checkpoint of a different config: refuse|allow

    def __post_init__(self) -> None:
        self.precision = str(self.precision)
        if self.precision not in PRECISIONS:
            raise ValueError(f"trainer.precision={self.precision!r}: expected 32, bf16 or 16")
        for name in ("max_steps", "accumulate", "log_every", "max_nonfinite"):
            if getattr(self, name) < 1:
                raise ValueError(f"trainer.{name} must be >= 1, got {getattr(self, name)}")
        if self.grad_clip < 0:
            raise ValueError(f"trainer.grad_clip must be >= 0 (0 disables), got {self.grad_clip}")
        for name in ("val_every", "checkpoint_every", "diagnostics_every", "keep_last"):
            if getattr(self, name) < 0:
                raise ValueError(f"trainer.{name} must be >= 0 (0 disables), got "
                                 f"{getattr(self, name)}")
        for name in ("diagnostics_steps", "diagnostics_frames", "val_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"trainer.{name} must be >= 1, got {getattr(self, name)}")
        self.collapse = CollapseThresholds.from_mapping(self.collapse)
        if self.collapse.enabled and not self.diagnostics_every:
            raise ValueError("trainer.collapse thresholds need the diagnostics: set "
                             "trainer.diagnostics_every > 0")
        self.resume_changed = str(self.resume_changed)
        if self.resume_changed not in RESUME_CHANGED:
            raise ValueError(f"trainer.resume_changed={self.resume_changed!r}: expected refuse "
                             "(the default) or allow")
        self.wandb = _wandb_options(self.wandb)

    @classmethod
    def from_config(cls, trainer: Mapping[str, Any]) -> TrainerSettings:
        """From the ``trainer`` config group; an unknown key is an error naming it."""
        known = {f.name for f in fields(cls)}
        raw = {str(k): v for k, v in trainer.items() if k not in ENTRY_POINT_KEYS}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"trainer: unknown keys {unknown}; allowed: "
                             f"{sorted(known | set(ENTRY_POINT_KEYS))}")
        for f in fields(cls):
            if f.name in raw:
                raw[f.name] = _typed(f.name, raw[f.name], str(f.type))
        return cls(**raw)

    def check_device(self, device: torch.device) -> None:
        """Settings the device cannot run."""
        if self.precision == "16" and device.type != "cuda":
            raise ValueError("trainer.precision=16 needs a CUDA device; use bf16 on CPU")


def _typed(name: str, value: Any, kind: str) -> Any:
    """``value`` as the field's ``int``/``float``/``bool``, or an error naming the key."""
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ValueError(f"trainer.{name}={value!r}: expected true or false")
    if kind in ("int", "float"):
        number = not isinstance(value, bool) and isinstance(value, (int, float))
        if number and (kind == "float" or float(value).is_integer()):
            return int(value) if kind == "int" else float(value)
        what = "a whole number" if kind == "int" else "a number"
        raise ValueError(f"trainer.{name}={value!r}: expected {what}")
    return value


def _wandb_options(value: Any) -> dict[str, Any] | None:
    """``trainer.wandb``: null/false (off), true (defaults), or a mapping of WANDB_KEYS."""
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, Mapping):
        raise ValueError(f"trainer.wandb={value!r}: expected null, true or a mapping such as "
                         "{project: ssl, mode: offline}")
    options = {str(k): v for k, v in value.items()}
    unknown = sorted(set(options) - set(WANDB_KEYS))
    if unknown:
        raise ValueError(f"trainer.wandb: unknown keys {unknown}; allowed: {list(WANDB_KEYS)}")
    mode = options.get("mode")
    if mode is not None and mode not in WANDB_MODES:
        raise ValueError(f"trainer.wandb.mode={mode!r}: expected one of {list(WANDB_MODES)}")
    return options
