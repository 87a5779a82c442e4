"""Optional Weights & Biases logging (``trainer.wandb``), beside the JSON lines and TensorBoard.

``trainer.wandb={project: ssl, mode: offline}`` logs every training, validation and diagnostic
record as ``<split>/<metric>`` at its step, with the run's resolved config. ``mode: offline``
writes under ``dir`` (default: the run directory) for a later ``wandb sync``. Needs the
``wandb`` package (``pip install 'ssl_speech[wandb]'``); only the main rank logs. A resumed
run continues the W&B run of the same id (the run directory's name and a hash of its path).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from ssl_speech.train.errors import MissingExtraError

INSTALL_HINT = ("trainer.wandb is set but wandb is not installed: pip install "
                "'ssl_speech[wandb]' (or pip install wandb), or drop trainer.wandb")


class WandbLogger:
    """One W&B run per training run; :meth:`log` and :meth:`close` mirror ``MetricsLogger``."""

    def __init__(self, options: dict[str, Any], run_dir: Path, config: dict[str, Any],
                 resume: bool) -> None:
        try:
            import wandb
        except ImportError as error:
            raise MissingExtraError(INSTALL_HINT) from error
        run_dir = Path(run_dir)
        digest = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:8]
        options = dict(options)
        directory = Path(options.pop("dir", None) or run_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            project=options.pop("project", None) or "ssl_speech",
            name=options.pop("name", None) or run_dir.name,
            id=re.sub(r"[^A-Za-z0-9_.-]", "-", f"{run_dir.name}-{digest}"),
            resume="allow" if resume else None,
            dir=str(directory), config=config, **options,
        )

    def log(self, step: int, metrics: dict[str, float], split: str = "train") -> None:
        self._run.log({f"{split}/{name}": value for name, value in metrics.items()}, step=step)

    def close(self) -> None:
        self._run.finish()
