"""The objective interface shared by every self-supervised loss.

An objective owns its own parameters (prediction heads, teachers, decoders) and decides how to
drive the model: it receives the ``SSLModel`` and a ``Batch`` and returns the loss with a dict
of detached scalar metrics. The trainer optimises ``model.parameters()`` together with
``objective.parameters()`` and never looks at the metric names.

Optional hooks an objective may define (the trainer calls them if present):

- ``after_optimizer_step(model, step: int) -> None``: after each optimizer update
  (e.g. an EMA teacher update).
- ``extra_state() -> dict`` / ``load_extra_state(state)``: non-parameter state to checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


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
    """Interface: ``forward(model, batch) -> ObjectiveOutput``.

    Concrete objectives subclass ``nn.Module`` through this class only for the type; they share
    no behaviour through inheritance (shared pieces are functions in ``negatives.py``).
    """

    def forward(self, model: nn.Module, batch) -> ObjectiveOutput:  # noqa: ANN001
        raise NotImplementedError(f"{type(self).__name__} must implement forward(model, batch)")


def scalar(value: float | Tensor, like: Tensor | None = None) -> Tensor:
    """A detached 0-dim float tensor on ``like``'s device, for metrics."""
    device = like.device if like is not None else None
    return torch.as_tensor(value, dtype=torch.float32, device=device).detach()
