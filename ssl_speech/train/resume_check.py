"""Resuming only the run a checkpoint belongs to: the config it was trained with must match.

A checkpoint stores the resolved config of its run. Resuming it with another batch size,
objective, model, optimizer or corpus would silently train a different run under the old name,
so the trainer refuses and names the differing keys, unless the user consents with
``trainer.resume_changed=allow``. Keys that only change how the run is watched or where it
runs (:data:`FREE_KEYS`) may differ freely, and so may ``trainer.max_steps``: training a run
longer is resuming it (the learning-rate schedule follows the new length from the step
reached).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ssl_speech.runs import checkpoint as ckpt
from ssl_speech.train.errors import ResumeConfigError

# Dotted prefixes that may change between a run and its resumption.
FREE_KEYS = (
    "run_dir", "run_name", "probe",
    "trainer.max_steps", "trainer.resume", "trainer.resume_changed", "trainer.device",
    "trainer.threads",
    "trainer.progress", "trainer.tensorboard", "trainer.wandb", "trainer.log_every",
    "trainer.val_every", "trainer.val_batches", "trainer.checkpoint_every",
    "trainer.keep_last", "trainer.diagnostics_every", "trainer.diagnostics_steps",
    "trainer.diagnostics_frames", "trainer.collapse", "trainer.max_nonfinite",
    "trainer.collective_timeout_s", "data.num_workers", "data.in_memory",
    "data.synthetic.cache_dir",
)
_SHOWN = 8  # differing keys listed in the message


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def _is_free(key: str) -> bool:
    return any(key == free or key.startswith(free + ".") for free in FREE_KEYS)


def changed_keys(saved: Mapping[str, Any], current: Mapping[str, Any],
                 ) -> list[tuple[str, Any, Any]]:
    """``(dotted key, saved value, current value)`` for each key that differs, free keys left
    out; a key missing on one side has the value ``"<absent>"`` there."""
    old, new = _flatten(saved), _flatten(current)
    absent = "<absent>"
    return [(key, old.get(key, absent), new.get(key, absent))
            for key in sorted(set(old) | set(new))
            if not _is_free(key) and old.get(key, absent) != new.get(key, absent)]


def check_resume_config(saved: Mapping[str, Any], current: Mapping[str, Any], policy: str,
                        checkpoint: Path) -> list[tuple[str, Any, Any]]:
    """Raise :class:`ResumeConfigError` naming the differing keys unless ``policy`` is
    ``allow`` (then return them, for a warning). Nothing is checked when either config is
    empty (a trainer driven without a config)."""
    if not saved or not current:
        return []
    changes = changed_keys(saved, current)
    if changes and policy != "allow":
        listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes[:_SHOWN])
        more = f" (and {len(changes) - _SHOWN} more)" if len(changes) > _SHOWN else ""
        raise ResumeConfigError(
            f"trainer.resume: {checkpoint} was trained with a different config: {listed}{more}. "
            "Rerun with the run's own settings, start a new run (another run_dir), or add "
            "trainer.resume_changed=allow to resume with the new settings anyway")
    return changes


def find_resume_checkpoint(resume: str | bool, run_dir: str | Path) -> Path | None:
    """The checkpoint ``trainer.resume`` asks for: ``auto`` (the run's newest valid one, if
    any), ``true`` (it must exist), ``false`` (none), or a checkpoint file or run directory."""
    resume = str(resume).lower() if isinstance(resume, bool) else str(resume)
    if resume in ("false", "no", "0"):
        return None
    explicit = resume not in ("auto", "true", "yes", "1")
    source = Path(resume) if explicit else Path(run_dir)
    if explicit and not source.exists():
        raise ckpt.CheckpointError(
            f"trainer.resume={resume}: no such file or directory; give a checkpoint file or "
            "a run directory, or use auto (the default) or false")
    if source.is_dir():
        found = ckpt.latest_valid_checkpoint(source)
    else:
        found = source if explicit else None  # a run that has not started yet
    if found is None and resume != "auto":
        raise ckpt.CheckpointError(f"trainer.resume={resume} but {source} has no usable "
                                   "checkpoint; use auto or false to start afresh")
    return found
