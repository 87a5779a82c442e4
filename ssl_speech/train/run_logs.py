"""Where a run's metrics go: the JSON lines and TensorBoard (``MetricsLogger``), optionally
Weights & Biases; and the window of training metrics summed between two log lines.

Only the main rank writes. TensorBoard asked for (``trainer.tensorboard=true``, the default)
but not installed gives one warning saying how to install it or turn it off.
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from pathlib import Path
from typing import Any

from torch import Tensor

from ssl_speech.runs.metrics_log import MetricsLogger
from ssl_speech.train.settings import TrainerSettings

TENSORBOARD_HINT = ("trainer.tensorboard=true but tensorboard is not installed, so no "
                    "TensorBoard logs are written: pip install 'ssl_speech[tensorboard]', or "
                    "set trainer.tensorboard=false")


class RunLogs:
    """The run's metric sinks; on other ranks than the main one, nothing is written.

    ``resumed``: the run resumes at ``step`` (the JSON lines after it are dropped).
    """

    def __init__(self, run_dir: Path, settings: TrainerSettings, is_main: bool,
                 config: dict[str, Any], step: int, resumed: bool) -> None:
        if is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            if settings.tensorboard and importlib.util.find_spec("tensorboard") is None:
                warnings.warn(TENSORBOARD_HINT, stacklevel=3)
        self.metrics = MetricsLogger(run_dir, enabled=is_main, tensorboard=settings.tensorboard,
                                     resume_step=step if resumed else None)
        self.wandb: Any = None
        if settings.wandb is not None and is_main:
            from ssl_speech.train.wandb_logger import WandbLogger

            self.wandb = WandbLogger(settings.wandb, run_dir, config, resume=resumed)

    def log(self, step: int, values: dict[str, float], split: str, **extra: Any) -> None:
        self.metrics.log(step, values, split=split, **extra)
        if self.wandb is not None:
            self.wandb.log(step, values, split=split)

    def close(self) -> None:
        self.metrics.close()
        if self.wandb is not None:
            self.wandb.close()
            self.wandb = None


class MetricWindow:
    """Training metrics summed over the steps since the last log line (kept on the device)."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.count = 0
        self.audio_seconds = 0.0
        self.tick = time.perf_counter()

    def add(self, metrics: dict[str, Tensor], audio_seconds: float) -> None:
        for name, value in metrics.items():
            self.sums[name] = self.sums.get(name, 0) + value
        self.count += 1
        self.audio_seconds += audio_seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.tick
