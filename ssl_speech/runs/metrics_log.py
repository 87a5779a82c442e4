"""Metric logs of a run: JSON lines (always) and TensorBoard (when it is installed).

Only the main rank writes; other ranks get a logger whose methods do nothing.

The JSON-lines file survives a kill at any byte: a record is one ``write`` of one line, so a kill
can only leave a torn *last* line, which readers skip and a resumed run removes (the file is
rewritten atomically, by a temporary file and a rename). A write that fails (disk full) is undone
by truncating the file back to its previous size, so the log never holds a torn line in the
middle, and raises :class:`MetricsLogError` saying which step was not logged.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any


class MetricsLogError(OSError):
    """A metrics record could not be written; the message names the file, step and cause."""


class MetricsLogger:
    """Appends ``{"step": ..., "split": ..., **metrics}`` lines to ``<run_dir>/metrics.jsonl``.

    On resume the file is truncated to the lines at or before the resumed step, so the log of a
    resumed run reads like an uninterrupted one.
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True,
                 resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.path.parent.glob(".metrics.jsonl.*.tmp"):  # from a killed rewrite
            stale.unlink(missing_ok=True)
        if resume_step is not None and self.path.exists():
            self._truncate_after(resume_step)
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                warnings.warn(
                    "TensorBoard logging is on (trainer.tensorboard=true) but tensorboard is not "
                    f"installed: metrics go to {self.path} only. Install it (pip install "
                    "tensorboard) or set trainer.tensorboard=false.",
                    stacklevel=2,
                )
            else:
                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def _truncate_after(self, step: int) -> None:
        """Keep the records at or before ``step``; drop torn lines; replace the file atomically."""
        kept = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            if isinstance(record, dict) and record.get("step", 0) <= step:
                kept.append(line)
        text = "".join(f"{line}\n" for line in kept)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".metrics.jsonl.", suffix=".tmp")
        os.close(fd)
        try:
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as err:
            Path(tmp).unlink(missing_ok=True)
            raise MetricsLogError(
                f"cannot rewrite {self.path} for the resume at step {step}: {err}"
                f"{_space_hint(err)}; the file is unchanged"
            ) from err
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def log(self, step: int, metrics: dict[str, float], split: str = "train",
            **extra: Any) -> None:
        if not self.enabled:
            return
        record = {"step": step, "split": split, "time": round(time.time(), 3), **extra, **metrics}
        line = json.dumps(record) + "\n"
        size = self.path.stat().st_size if self.path.exists() else 0
        try:
            with open(self.path, "a") as f:
                f.write(line)
        except OSError as err:
            _truncate_quietly(self.path, size)
            raise MetricsLogError(
                f"cannot append the {split} metrics of step {step} to {self.path}: {err}"
                f"{_space_hint(err)}; the log is intact up to the previous record"
            ) from err
        if self._tb is not None:
            for name, value in metrics.items():
                self._tb.add_scalar(f"{split}/{name}", value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _space_hint(err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        return " (the disk is full: free space, then resume the run)"
    return ""


def _truncate_quietly(path: Path, size: int) -> None:
    """Undo a partial append; a failure here leaves a torn line that readers skip."""
    try:
        if path.exists() and path.stat().st_size > size:
            os.truncate(path, size)
    except OSError:
        pass


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Records of a metrics file (or of ``<run_dir>/metrics.jsonl``), skipping broken lines."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
