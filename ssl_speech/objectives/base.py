"""The objective interface shared by every self-supervised loss.

An objective owns its own parameters (prediction heads, teachers, decoders) and decides how to
drive the model: it receives the ``SSLModel`` and a ``Batch`` and returns the loss with a dict
of detached scalar metrics. The trainer optimises ``model.parameters()`` together with
``objective.parameters()`` and never looks at the metric names.

Hooks the trainer calls on every objective, declared on :class:`Objective` with no-op defaults
that an objective overrides where it needs them:

- ``after_optimizer_step(model, step)``: after each optimizer update (TriNet's EMA update).
- ``extra_state() -> dict`` / ``load_extra_state(state)``: non-parameter state to checkpoint
  (a plain dict of Python values) and to check or restore on resume.
- ``diagnostic_features() -> dict[str, Tensor]``: the last batch's frames for the collapse watch
  (``ssl_speech.train.diagnostics``); empty to let the trainer use the model's ``z`` and ``c``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ssl_speech.data.batch import Batch


@dataclass
class ObjectiveOutput:
    """What ``Objective.forward`` returns.

    Attributes:
        loss: scalar tensor to minimise (carries the graph).
        metrics: detached scalar tensors, e.g. ``{"acc/step_1": ..., "loss/nce": ...}``. They stay
            on the device: the trainer reduces them lazily so no host sync happens inside a step.
    """

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.loss.dim() != 0:
            raise ValueError(
                f"ObjectiveOutput.loss must be a scalar, got shape {tuple(self.loss.shape)}"
            )
        self.metrics = {k: v.detach() for k, v in self.metrics.items()}


class Objective(nn.Module):
    """Interface: ``forward(model, batch) -> ObjectiveOutput`` and the trainer's hooks.

    Every objective subclasses this class; it shares no loss behaviour through inheritance
    (shared pieces are composed: :mod:`ssl_speech.objectives.predictive`, ``negatives.py``). The
    hooks' defaults do nothing, so an objective defines only those it needs.
    """

    def forward(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        raise NotImplementedError(f"{type(self).__name__} must implement forward(model, batch)")

    def after_optimizer_step(self, model: nn.Module, step: int) -> None:
        """Called after each optimizer update; ``step`` counts the updates, this one included."""

    def extra_state(self) -> dict[str, Any]:
        """Non-parameter state for the checkpoint (plain Python values); none by default."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore (or verify) what :meth:`extra_state` wrote; nothing by default."""

    def diagnostic_features(self) -> dict[str, Tensor]:
        """The last batch's frames for the collapse watch: float ``(N, dim)`` vectors or integer
        ``(N,)`` classes by name. Empty by default: the trainer then uses the model's z and c."""
        return {}


def scalar(value: float | Tensor, like: Tensor | None = None) -> Tensor:
    """A detached 0-dim float tensor on ``like``'s device, for metrics."""
    device = like.device if like is not None else None
    return torch.as_tensor(value, dtype=torch.float32, device=device).detach()
