"""Watching a run for collapse: when to gather frames, when to diagnose, when to stop.

Every ``trainer.diagnostics_every`` steps the watch computes the collapse metrics of
:mod:`ssl_speech.train.diagnostics` on the frames of the last ``diagnostics_steps`` steps, and
stops the run (:class:`CollapseError`) when one falls below its ``trainer.collapse`` threshold.

Which frames: the objective's ``diagnostic_features()`` (references to its last batch's
frames, no copy) when it returns any, else the model's ``z`` and ``c`` on the gathered batches,
computed at the diagnosis (eval mode, no gradient). Only the diagnosis itself syncs with the
host; between diagnoses the watch costs nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ssl_speech.data.batch import Batch
from ssl_speech.train.diagnostics import CollapseThresholds, FrameBuffer, collapse_metrics
from ssl_speech.train.errors import CollapseError


class CollapseWatch:
    """Collapse diagnostics of one run.

    Args:
        every: diagnose every this many steps (0: never).
        steps: gather frames over this many steps up to each diagnosis (>= 1).
        frames: at most this many frames per feature (>= 1).
        thresholds: lower bounds that stop the run.
        reduce: averages a ``{name: 0-dim tensor}`` over ranks into floats.
        autocast: the trainer's autocast context for the model's frames.
        device: where the model's frames are computed.
    """

    def __init__(self, every: int, steps: int, frames: int, thresholds: CollapseThresholds,
                 reduce: Callable[[dict[str, Tensor]], dict[str, float]],
                 autocast: Callable[[], contextlib.AbstractContextManager],
                 device: torch.device) -> None:
        if every < 0 or steps < 1 or frames < 1:
            raise ValueError(f"CollapseWatch: need every >= 0, steps >= 1, frames >= 1; got "
                             f"{every}, {steps}, {frames}")
        self.every = every
        self.steps = steps
        self.frames = frames
        self.thresholds = thresholds
        self._reduce = reduce
        self._autocast = autocast
        self.device = device
        self._buffer = FrameBuffer(frames)
        self._batches: list[Batch] = []

    def after_step(self, step: int, model: nn.Module, objective: nn.Module,
                   micro_batches: list[Batch]) -> dict[str, float]:
        """Gather this step's frames if a diagnosis is near; at a diagnosis step, return the
        ``diag/<feature>/<metric>`` values (else ``{}``). Raises :class:`CollapseError`."""
        if not self.every:
            return {}
        steps_left = -step % self.every
        if steps_left >= self.steps:
            return {}
        features = objective.diagnostic_features()
        if features:
            self._buffer.add(features)
        else:
            self._batches.extend(micro_batches)
        if steps_left:
            return {}
        features = self._buffer.take() or self._model_features(model, self._batches)
        self._batches = []
        values = self._reduce(collapse_metrics(features))
        values = {f"diag/{name}": value for name, value in values.items()}
        message = self.thresholds.violation(values, step)
        if message is not None:
            raise CollapseError(f"{message}. The diagnostics at that step: " + ", ".join(
                f"{k}={v:.3g}" for k, v in sorted(values.items())))
        return values

    @torch.no_grad()
    def _model_features(self, model: nn.Module, batches: list[Batch]) -> dict[str, Tensor]:
        """The model's ``z`` and ``c`` frames ``(N, dim)`` on the newest ``batches``."""
        zs: list[Tensor] = []
        cs: list[Tensor] = []
        model.eval()
        try:
            for batch in reversed(batches):
                with self._autocast():
                    z, c = model(batch.wav.to(self.device, non_blocking=True))
                zs.append(z.flatten(0, 1))
                cs.append(c.flatten(0, 1))
                if sum(len(x) for x in zs) >= self.frames:
                    break
        finally:
            model.train()
        if not zs:
            return {}
        return {"z": torch.cat(zs)[:self.frames], "c": torch.cat(cs)[:self.frames]}
