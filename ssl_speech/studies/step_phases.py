"""Where a training step's time goes: encoder, context, heads, scores, backward, optimizer.

The phases are read off hooks on the modules and the optimizer, so the step itself runs as the
trainer runs it:

- ``encoder``, ``context``: the model's encoder and context forward passes (every call, e.g. a
  teacher pass of the same model counts too);
- ``heads``: the objective's ``heads`` forward (objectives without one report 0);
- ``scores``: the rest of the objective's forward: negatives, scores, loss and metrics;
- ``backward``: from the end of the forward to the optimizer: the backward pass, gradient
  unscaling and the gradient-norm clip;
- ``optimizer``: the optimizer's ``step``;
- ``other``: what the step spends outside these (zeroing gradients, the schedule, hooks, the
  loop's Python work).

Each phase is timed in wall seconds and in CPU seconds of the process (:class:`Stamp`); on a
machine shared with other jobs the CPU seconds are the steadier measure of the work itself.

On CUDA every boundary synchronizes the device, so a profiled step is slower than an
unprofiled one; the phases' shares are what it is for. FLOPs per phase come from the same
shape-based count as the step's (forward only for the forward phases; the backward phase gets
the rest), so each phase's achieved rate can be set against the matrix product rate.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

PHASES = ("encoder", "context", "heads", "scores", "backward", "optimizer", "other")
_FORWARD_PARTS = ("encoder", "context", "heads")


def phase_modules(train_module: nn.Module) -> dict[str, nn.Module]:
    """The modules whose forward passes are phases: ``encoder``, ``context`` and, if the
    objective has them, ``heads`` (``train_module`` holds ``model`` and ``objective``)."""
    model, objective = train_module.model, train_module.objective
    parts = {"encoder": model.encoder, "context": model.context}
    # the predictive objectives keep their heads in their shared core
    heads = getattr(getattr(objective, "core", objective), "heads", None)
    if isinstance(heads, nn.Module):
        parts["heads"] = heads
    return parts


@dataclass(frozen=True)
class Stamp:
    """A reading of two clocks: wall time, and the CPU time of every thread of the process.

    CPU time is what the step's own threads ran: on a machine shared with other jobs it leaves
    out the time they waited for a core, so its shares hold still while wall time jumps. With
    ``OMP_WAIT_POLICY=PASSIVE`` a thread waiting at a barrier sleeps and adds none; an active
    (spinning) wait counts as CPU time.
    """

    wall: float = 0.0
    cpu: float = 0.0

    def __add__(self, other: Stamp) -> Stamp:
        return Stamp(self.wall + other.wall, self.cpu + other.cpu)

    def __sub__(self, other: Stamp) -> Stamp:
        return Stamp(self.wall - other.wall, self.cpu - other.cpu)


def _sum(stamps) -> Stamp:
    total = Stamp()
    for stamp in stamps:
        total = total + stamp
    return total


class PhaseClock:
    """Accumulates wall and CPU seconds per phase of the steps run while it is attached.

    Args:
        train_module: the trainer's module (``model`` and ``objective``), not a compiled or
            DDP wrapper (hooks on a compiled module's parts would not fire).
        optimizer: the trainer's optimizer.
        device: where the step runs; CUDA is synchronized at every boundary.
    """

    def __init__(self, train_module: nn.Module, optimizer: torch.optim.Optimizer,
                 device: torch.device) -> None:
        self.device = torch.device(device)
        self.seconds = dict.fromkeys(PHASES, Stamp())
        self.steps = 0
        self._forward_start = self._forward_end = self._optimizer_start = Stamp()
        self._depth = dict.fromkeys(_FORWARD_PARTS, 0)
        self._part_start = dict.fromkeys(_FORWARD_PARTS, Stamp())
        self._part_seconds = dict.fromkeys(_FORWARD_PARTS, Stamp())
        self._handles: list[Any] = []
        hook = train_module.register_forward_pre_hook(lambda *_: self._mark_forward_start())
        self._handles.append(hook)
        self._handles.append(
            train_module.register_forward_hook(lambda *_: self._mark_forward_end()))
        for name, module in phase_modules(train_module).items():
            self._handles.append(module.register_forward_pre_hook(self._part_enter(name)))
            self._handles.append(module.register_forward_hook(self._part_leave(name)))
        self._handles.append(optimizer.register_step_pre_hook(
            lambda *_: self._mark_optimizer_start()))
        self._handles.append(optimizer.register_step_post_hook(
            lambda *_: self._mark_optimizer_end()))

    def _now(self) -> Stamp:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return Stamp(time.perf_counter(), time.process_time())

    def _add(self, phase: str, seconds: Stamp) -> None:
        self.seconds[phase] = self.seconds[phase] + seconds

    def _mark_forward_start(self) -> None:
        self._forward_start = self._now()
        self._part_seconds = dict.fromkeys(_FORWARD_PARTS, Stamp())

    def _part_enter(self, name: str) -> Callable[..., None]:
        def enter(*_: Any) -> None:
            if self._depth[name] == 0:  # a part called from inside itself counts once
                self._part_start[name] = self._now()
            self._depth[name] += 1
        return enter

    def _part_leave(self, name: str) -> Callable[..., None]:
        def leave(*_: Any) -> None:
            self._depth[name] -= 1
            if self._depth[name] == 0:
                spent = self._now() - self._part_start[name]
                self._part_seconds[name] = self._part_seconds[name] + spent
        return leave

    def _mark_forward_end(self) -> None:
        self._forward_end = self._now()
        forward = self._forward_end - self._forward_start
        for name, seconds in self._part_seconds.items():
            self._add(name, seconds)
        self._add("scores", forward - _sum(self._part_seconds.values()))

    def _mark_optimizer_start(self) -> None:
        self._optimizer_start = self._now()
        self._add("backward", self._optimizer_start - self._forward_end)

    def _mark_optimizer_end(self) -> None:
        self._add("optimizer", self._now() - self._optimizer_start)

    def time_step(self, step: Callable[[], None]) -> float:
        """Run one ``step`` and return its wall seconds; the phases' shares accumulate."""
        before = _sum(self.seconds.values())
        start = self._now()
        step()
        total = self._now() - start
        self._add("other", total - (_sum(self.seconds.values()) - before))
        self.steps += 1
        return total.wall

    def mean_seconds(self) -> dict[str, float]:
        """Mean wall seconds per step of every phase (all of :data:`PHASES`)."""
        return {name: value.wall / max(self.steps, 1) for name, value in self.seconds.items()}

    def mean_cpu_seconds(self) -> dict[str, float]:
        """Mean CPU seconds (all threads of the process) per step of every phase."""
        return {name: value.cpu / max(self.steps, 1) for name, value in self.seconds.items()}

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def phase_flops(train_module: nn.Module, batch: Any,
                autocast: contextlib.AbstractContextManager | None = None,
                step_flops: int | None = None, formulas: dict | None = None) -> dict[str, int]:
    """FLOPs of each phase of one step: the forward parts from a forward-only count
    (``scores`` is the forward's remainder), ``backward`` = ``step_flops`` minus the forward
    (``step_flops`` from :func:`~ssl_speech.studies.step_flops.count_step_flops`); the optimizer
    and ``other`` count 0 (elementwise work is not counted). ``formulas``: FLOP formulas for
    kernels ``torch.utils.flop_counter`` does not know
    (:func:`~ssl_speech.studies.step_flops.extra_flop_formulas`)."""
    from torch.utils.flop_counter import FlopCounterMode

    objectives = [m for m in train_module.modules() if hasattr(m, "score_method")]
    saved = [m.score_method for m in objectives]
    parts = phase_modules(train_module)
    counts = dict.fromkeys(_FORWARD_PARTS, 0)
    try:
        for m in objectives:  # the gather form's arithmetic, as the step's count
            m.score_method = "gather"
        counter = FlopCounterMode(display=False, custom_mapping=formulas or {})
        with counter, torch.no_grad(), autocast or contextlib.nullcontext():
            train_module(batch)
    finally:
        for m, method in zip(objectives, saved):
            m.score_method = method
    by_module = counter.get_flop_counts()
    names = {id(module): name for name, module in train_module.named_modules()}
    root = type(train_module).__name__
    for part, module in parts.items():
        key = f"{root}.{names[id(module)]}"
        counts[part] = int(sum(by_module.get(key, {}).values()))
    forward = int(counter.get_total_flops())
    out = {**counts, "scores": forward - sum(counts.values())}
    out["backward"] = (step_flops - forward) if step_flops is not None else 0
    out["optimizer"] = out["other"] = 0
    return out
