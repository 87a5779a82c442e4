"""Faults injected from inside a training process, for the fault campaign.

The campaign starts ``python -m ssl_speech.train`` with this module installed at start-up (a
``sitecustomize`` it writes imports :func:`install`) and a plan in the environment variable
:data:`PLAN_ENV`. Nothing in the library imports this module: the faults land through public
seams only — the built-in ``open`` and ``torch.save`` for the file layer, ``os.fsync`` and
``os.replace`` for the steps of an atomic write, and torch's global optimizer-step hook for
the training step — so the same plan works whatever the trainer's internals look like.

A plan is a JSON object:

- ``{"kind": "kill_in_write", "target": "checkpoint" | "metrics", "after_bytes": N,
  "nth": K}``: the K-th write to such a file stops after N bytes, then SIGKILL;
- ``{"kind": "kill_at", "point": "fsync" | "replace", "nth": K}``: SIGKILL just before the
  K-th call of that step of an atomic write;
- ``{"kind": "disk_full", "target": "checkpoint" | "metrics" | "any", "after_bytes": N}``:
  once N bytes went to such files, every further write raises ``OSError(ENOSPC)``;
- ``{"kind": "rank_fault", "rank": R, "step": S, "action": "kill" | "raise"}``: the process
  of rank R is killed, or raises, before its optimizer step S;
- ``{"kind": "signal", "signal": N, "step": S, "delay": D, "count": C, "gap": G}``: when the
  optimizer step S begins, a timer sends signal N to the process after D seconds, C times
  G seconds apart (so it lands anywhere in the step, the checkpoint after it included).
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

PLAN_ENV = "SSL_SPEECH_FAULT_PLAN"

_state: dict[str, Any] = {"bytes": 0, "writes": 0, "calls": {}, "steps": 0, "full": False}


def _target_of(path: str) -> str | None:
    name = Path(path).name
    if "checkpoints" in Path(path).parts or name.startswith("ckpt-"):
        return "checkpoint"
    if name.startswith("metrics.jsonl"):
        return "metrics"
    return None


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class _FaultyFile(io.RawIOBase):
    """A write-only file that lets ``budget`` bytes through, then kills or fails."""

    def __init__(self, raw, plan: dict[str, Any]) -> None:
        super().__init__()
        self._raw = raw
        self._plan = plan

    def write(self, data) -> int:  # type: ignore[override]
        data = bytes(data) if not isinstance(data, str) else data
        budget = int(self._plan["after_bytes"]) - _state["bytes"]
        size = len(data)
        if budget >= size:
            _state["bytes"] += size
            return self._raw.write(data)
        if budget > 0:
            self._raw.write(data[:budget])
            _state["bytes"] += budget
        self._raw.flush()
        if self._plan["kind"] == "kill_in_write":
            os.fsync(self._raw.fileno())
            _kill()
        _state["full"] = True
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._raw.name)

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._raw.fileno()

    def flush(self) -> None:
        self._raw.flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            super().close()  # flushes through the still open file
        finally:
            self._raw.close()

    def __getattr__(self, name: str):
        return getattr(self._raw, name)


def _install_file_layer(plan: dict[str, Any]) -> None:
    real_open = builtins.open

    def faulty_open(file, mode="r", *args, **kwargs):
        raw = real_open(file, mode, *args, **kwargs)
        if not isinstance(file, (str, os.PathLike)) or not any(c in mode for c in "wax"):
            return raw
        target = _target_of(os.fspath(file))
        if target is None or (plan.get("target", "any") not in ("any", target)):
            return raw
        _state["writes"] += 1
        if plan["kind"] == "kill_in_write" and _state["writes"] != int(plan.get("nth", 1)):
            return raw
        if plan["kind"] == "kill_in_write":
            _state["bytes"] = 0
        return _FaultyFile(raw, plan)

    builtins.open = faulty_open

    import torch

    real_save = torch.save

    def save_through_open(obj, f, *args, **kwargs):
        # torch.save(path) writes from C++; route it through ``open`` so the layer sees it.
        if isinstance(f, (str, os.PathLike)):
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            with faulty_open(f, "wb") as out:
                out.write(buffer.getvalue())
            return None
        return real_save(obj, f, *args, **kwargs)

    torch.save = save_through_open


def _install_call_point(plan: dict[str, Any]) -> None:
    point = plan["point"]
    real = {"fsync": os.fsync, "replace": os.replace}[point]

    def wrapped(*args, **kwargs):
        _state["calls"][point] = _state["calls"].get(point, 0) + 1
        if _state["calls"][point] == int(plan.get("nth", 1)):
            _kill()
        return real(*args, **kwargs)

    setattr(os, point, wrapped)


def _install_rank_fault(plan: dict[str, Any]) -> None:
    rank = int(os.environ.get("RANK", "0"))
    if rank != int(plan["rank"]):
        return
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    def hook(optimizer, args, kwargs):
        _state["steps"] += 1
        if _state["steps"] == int(plan["step"]):
            if plan["action"] == "kill":
                _kill()
            raise RuntimeError(f"injected fault on rank {rank} at step {plan['step']}")

    register_optimizer_step_pre_hook(hook)


def _install_signal(plan: dict[str, Any]) -> None:
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    def send() -> None:
        time.sleep(float(plan.get("delay", 0.0)))
        for i in range(int(plan.get("count", 1))):
            if i:
                time.sleep(float(plan.get("gap", 0.0)))
            os.kill(os.getpid(), int(plan["signal"]))

    def hook(optimizer, args, kwargs):
        _state["steps"] += 1
        if _state["steps"] == int(plan["step"]):
            threading.Thread(target=send, daemon=True).start()

    register_optimizer_step_pre_hook(hook)


def install() -> None:
    """Install the plan in :data:`PLAN_ENV`, if any (called from ``sitecustomize``)."""
    text = os.environ.get(PLAN_ENV)
    if not text:
        return
    plan = json.loads(text)
    # A restarted process (torchrun --max-restarts) runs clean: the fault happens once.
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        return
    kind = plan["kind"]
    if kind in ("kill_in_write", "disk_full"):
        _install_file_layer(plan)
    elif kind == "kill_at":
        _install_call_point(plan)
    elif kind == "rank_fault":
        _install_rank_fault(plan)
    elif kind == "signal":
        _install_signal(plan)
    else:
        raise ValueError(f"{PLAN_ENV}: unknown fault kind {kind!r}")


SITECUSTOMIZE = "from ssl_speech.studies.fault_injection import install\ninstall()\n"
