"""An exponential-moving-average teacher and its momentum schedule (BYOL, data2vec, DINO).

The teacher is a copy of a student network whose weights follow the student's:
``θ_teacher ← τ θ_teacher + (1 − τ) θ_student`` after every optimizer update, with the momentum
``τ`` from a schedule object. It is never trained: its parameters do not require gradients (so
no optimizer or weight decay sees them), it runs without autograd and always in eval mode
(no dropout, so its targets are deterministic).

The copy is made from the architecture at construction and takes the student's weights at the
first :meth:`EMATeacher.copy_from`; whether that happened is part of the module's state, so a
resumed run keeps its teacher instead of copying the student again.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class LinearMomentumSchedule:
    """``τ(step)``: linear from ``start`` to ``end`` over the first ``steps`` updates, then flat.

    ``τ(step) = start + (end − start) · min(step, steps) / steps``; ``step`` counts optimizer
    updates (the trainer's step after the update, so the first update uses ``τ(1)``).
    data2vec's speech recipe: 0.999 → 0.9999 over 30k updates.

    Args:
        start: momentum at step 0, in ``[0, 1]``.
        end: momentum from ``steps`` on, in ``[0, 1]``.
        steps: updates of the ramp (>= 1).
    """

    start: float = 0.999
    end: float = 0.9999
    steps: int = 30000

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"LinearMomentumSchedule: {name} must be in [0, 1], got {value}")
        if self.steps < 1:
            raise ValueError(f"LinearMomentumSchedule: steps must be >= 1, got {self.steps}")

    def __call__(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"LinearMomentumSchedule: step must be >= 0, got {step}")
        progress = min(step, self.steps) / self.steps
        return self.start + (self.end - self.start) * progress


class EMATeacher(nn.Module):
    """A frozen copy of ``network`` that :meth:`update` moves towards a student.

    Args:
        network: a module of the student's architecture (e.g. ``model.context``); a deep copy
            is kept, so passing the student itself is safe.

    Attributes:
        network: the teacher's copy (parameters with ``requires_grad=False``).
        initialized: ``True`` once :meth:`copy_from` has taken the student's weights.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = copy.deepcopy(network)
        self.network.requires_grad_(False)
        self.initialized = False
        self.train(False)

    def train(self, mode: bool = True) -> EMATeacher:
        """Always eval mode: the teacher's targets never see dropout."""
        return super().train(False)

    def get_extra_state(self) -> dict[str, Any]:
        return {"initialized": self.initialized}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.initialized = bool(state["initialized"])

    def _pairs(self, student: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
        """The teacher's and the student's parameters, matched by name and shape."""
        mine = dict(self.network.named_parameters())
        theirs = dict(student.named_parameters())
        bad = sorted(set(mine) ^ set(theirs))
        bad += [n for n in mine if n in theirs and mine[n].shape != theirs[n].shape]
        if bad:
            raise ValueError(
                f"EMATeacher: the student ({type(student).__name__}) does not match the "
                f"teacher's architecture ({type(self.network).__name__}); differing "
                f"parameters: {bad[:5]}. Build the teacher from the student's context config."
            )
        names = list(mine)
        return [mine[n] for n in names], [theirs[n].detach() for n in names]

    @torch.no_grad()
    def copy_from(self, student: nn.Module) -> None:
        """Take the student's weights and buffers exactly; marks the teacher initialised."""
        teacher_params, student_params = self._pairs(student)
        for t, s in zip(teacher_params, student_params):
            t.copy_(s)
        self._copy_buffers(student)
        self.initialized = True

    @torch.no_grad()
    def update(self, student: nn.Module, momentum: float) -> None:
        """``θ ← momentum · θ + (1 − momentum) · θ_student`` for every parameter.

        Buffers (running statistics, if any) are copied from the student.
        """
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"EMATeacher.update: momentum must be in [0, 1], got {momentum}")
        if not self.initialized:
            raise RuntimeError(
                "EMATeacher.update before copy_from: the teacher has no student weights yet"
            )
        teacher_params, student_params = self._pairs(student)
        torch._foreach_lerp_(teacher_params, student_params, 1.0 - momentum)
        self._copy_buffers(student)

    def _copy_buffers(self, student: nn.Module) -> None:
        theirs = dict(student.named_buffers())
        for name, buffer in self.network.named_buffers():
            if name in theirs:
                buffer.copy_(theirs[name])

    def forward_layers(self, *args: Any, **kwargs: Any) -> list[Tensor]:
        """The copy's ``forward_layers`` without autograd (a context network's interface)."""
        with torch.no_grad():
            return self.network.forward_layers(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return self.network(*args, **kwargs)
