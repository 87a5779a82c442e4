"""The training loop: one explicit loop in plain PyTorch.

Each optimizer step is ``accumulate`` micro-batches (gradient sync only on the last one under
DDP), autocast in the configured precision, an fp16 gradient scaler where needed, clipping, a
non-finite guard, the optimizer and schedule, the objective's post-step hook, then collapse
diagnostics, logging, validation and checkpoints at their intervals. The trainer knows nothing
of a particular objective: it optimises ``model`` and ``objective`` parameters together and
averages whatever metrics the objective returns.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from ssl_speech.data.audio import SAMPLE_RATE
from ssl_speech.data.batch import Batch
from ssl_speech.runs import checkpoint as ckpt
from ssl_speech.runs.metrics_log import MetricsLogger
from ssl_speech.train.diagnostics import CollapseThresholds, FrameBuffer, collapse_metrics
from ssl_speech.train.distributed import DistributedContext, all_reduce_mean, any_rank, barrier
from ssl_speech.train.preemption import PREEMPTED_EXIT_CODE, PreemptionHandler
from ssl_speech.train.rng import capture_rng_state, restore_rng_state

PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


class TrainingStoppedError(RuntimeError):
    """Training cannot go on (e.g. too many non-finite steps); the message says why."""


class PreemptedExit(SystemExit):
    """Raised after a preemption checkpoint; exits with :data:`PREEMPTED_EXIT_CODE`."""

    def __init__(self) -> None:
        super().__init__(PREEMPTED_EXIT_CODE)


@dataclass
class TrainerSettings:
    """Loop settings (the ``trainer`` config group), validated on construction."""

    max_steps: int = 1000
    accumulate: int = 1
    precision: str = "32"
    grad_clip: float = 0.0
    log_every: int = 20
    val_every: int = 0
    val_batches: int = 20
    checkpoint_every: int = 500
    keep_last: int = 3
    max_nonfinite: int = 10
    find_unused_parameters: bool = False
    progress: bool = True
    tensorboard: bool = True
    diagnostics_every: int = 0  # collapse metrics every N steps (0: off)
    diagnostics_steps: int = 4  # ... on the frames of the last steps up to then
    diagnostics_frames: int = 4096  # ... at most this many frames per feature
    collapse: Any = None  # CollapseThresholds or its mapping

    def __post_init__(self) -> None:
        self.precision = str(self.precision)
        if self.precision not in PRECISIONS:
            raise ValueError(f"trainer.precision={self.precision!r}: expected 32, bf16 or 16")
        for name in ("max_steps", "accumulate", "log_every", "max_nonfinite"):
            if getattr(self, name) < 1:
                raise ValueError(f"trainer.{name} must be >= 1, got {getattr(self, name)}")
        if self.grad_clip < 0:
            raise ValueError(f"trainer.grad_clip must be >= 0 (0 disables), got {self.grad_clip}")
        if self.diagnostics_every < 0:
            raise ValueError(f"trainer.diagnostics_every must be >= 0 (0 disables), got "
                             f"{self.diagnostics_every}")
        for name in ("diagnostics_steps", "diagnostics_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"trainer.{name} must be >= 1, got {getattr(self, name)}")
        self.collapse = CollapseThresholds.from_mapping(self.collapse)
        if self.collapse.enabled and not self.diagnostics_every:
            raise ValueError("trainer.collapse thresholds need the diagnostics: set "
                             "trainer.diagnostics_every > 0")


class TrainModule(nn.Module):
    """Model and objective as one module, so DDP syncs the gradients of both."""

    def __init__(self, model: nn.Module, objective: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        out = self.objective(self.model, batch)
        return out.loss, out.metrics


class Trainer:
    """Runs training of ``model`` with ``objective`` on batches from ``train_loader``.

    ``train_sampler`` must be the loader's batch sampler with ``set_epoch``, ``state_dict`` and
    ``load_state_dict`` (see ``SpeakerBatchSampler``); its position is recorded from the number
    of batches the loop has consumed, so loader prefetching never skips data on resume.
    """

    def __init__(
        self,
        model: nn.Module,
        objective: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        train_loader: torch.utils.data.DataLoader,
        train_sampler: Any,
        run_dir: str | Path,
        settings: TrainerSettings,
        ctx: DistributedContext | None = None,
        val_loader: torch.utils.data.DataLoader | None = None,
        config: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.objective = objective
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_loader = train_loader
        self.sampler = train_sampler
        self.val_loader = val_loader
        self.run_dir = Path(run_dir)
        self.settings = settings
        self.ctx = ctx or DistributedContext()
        self.config = config or {}
        self.seed = seed
        self.device = self.ctx.device
        if settings.precision == "16" and self.device.type != "cuda":
            raise ValueError("trainer.precision=16 needs a CUDA device; use bf16 on CPU")
        self.amp_dtype = PRECISIONS[settings.precision]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=settings.precision == "16")
        self.step = 0
        self.epoch = 0
        self.consumed = 0  # batches of the current epoch already used
        self.nonfinite_total = 0
        self.nonfinite_streak = 0
        self.module = TrainModule(model, objective).to(self.device)
        self.wrapped: nn.Module = self.module
        if self.ctx.enabled:
            self.wrapped = nn.parallel.DistributedDataParallel(
                self.module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=settings.find_unused_parameters,
            )
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.logger: MetricsLogger | None = None
        self._diag_frames = FrameBuffer(settings.diagnostics_frames)
        self._diag_batches: list[Batch] = []

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        extra = getattr(self.objective, "extra_state", None)
        return {
            "format": 1,
            "model": self.model.state_dict(),
            "objective": self.objective.state_dict(),
            "objective_extra": extra() if callable(extra) else {},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "consumed": self.consumed,
            "sampler": self.sampler.state_dict(consumed_batches=self.consumed),
            "rng": self._gather_rng_states(),
            "world_size": self.ctx.world_size,
            "counters": {"nonfinite_total": self.nonfinite_total,
                         "nonfinite_streak": self.nonfinite_streak},
            "config": self.config,
            "versions": _versions(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.objective.load_state_dict(state["objective"])
        load_extra = getattr(self.objective, "load_extra_state", None)
        if callable(load_extra):
            load_extra(state.get("objective_extra", {}))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.consumed = int(state["consumed"])
        self.sampler.load_state_dict(state["sampler"])
        counters = state.get("counters", {})
        self.nonfinite_total = int(counters.get("nonfinite_total", 0))
        self.nonfinite_streak = int(counters.get("nonfinite_streak", 0))
        rng = state.get("rng", [])
        if int(state.get("world_size", 1)) == self.ctx.world_size and len(rng) > self.ctx.rank:
            restore_rng_state(rng[self.ctx.rank])
        else:
            self._print(
                f"resuming with {self.ctx.world_size} processes from a checkpoint of "
                f"{state.get('world_size')}: data order is kept, random streams are reseeded"
            )
            torch.manual_seed(self.seed + 1000 * self.step + self.ctx.rank)

    def _gather_rng_states(self) -> list[dict[str, Any]]:
        local = capture_rng_state()
        if not self.ctx.enabled:
            return [local]
        gathered: list[Any] = [None] * self.ctx.world_size
        dist.all_gather_object(gathered, local)
        return gathered

    def save(self) -> Path | None:
        """Every rank takes part (RNG states are gathered); rank 0 writes."""
        state = self.state_dict()
        path = None
        if self.ctx.is_main:
            path = ckpt.save_checkpoint(state, ckpt.checkpoint_path(self.run_dir, self.step))
            ckpt.prune_checkpoints(self.run_dir, self.settings.keep_last)
        barrier(self.ctx)
        return path

    def maybe_resume(self, resume: str | bool) -> bool:
        """``resume``: ``auto`` (if the run has a checkpoint), ``true``, ``false``, or a path."""
        resume = str(resume).lower() if isinstance(resume, bool) else str(resume)
        if resume in ("false", "no", "0"):
            return False
        source = self.run_dir if resume in ("auto", "true", "yes", "1") else Path(resume)
        found = ckpt.latest_valid_checkpoint(source) if source.is_dir() else source
        if found is None:
            if resume in ("true", "yes", "1"):
                raise ckpt.CheckpointError(f"trainer.resume=true but {source} has no checkpoint")
            return False
        state = ckpt.load_checkpoint(found, map_location=self.device)
        self.load_state_dict(state)
        self._print(f"resumed from {found} at step {self.step} (epoch {self.epoch}, "
                    f"batch {self.consumed})")
        return True

    # ----------------------------------------------------------------- loop
    def _print(self, message: str) -> None:
        if self.ctx.is_main:
            tqdm.write(message, file=sys.stderr)

    def _batches(self) -> Iterator[Batch]:
        """Batches across epochs; ``self.epoch``/``self.consumed`` track what was handed out."""
        while True:
            self.sampler.set_epoch(self.epoch)
            for batch in self.train_loader:
                self.consumed += 1
                yield batch
            self.epoch += 1
            self.consumed = 0

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _forward_backward(self, batches: list[Batch]) -> tuple[Tensor, dict[str, Tensor]]:
        """Accumulate gradients over micro-batches; sync only on the last under DDP."""
        total_loss = torch.zeros((), device=self.device)
        sums: dict[str, Tensor] = {}
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            sync = contextlib.nullcontext()
            if self.ctx.enabled and not last:
                sync = self.wrapped.no_sync()
            with sync:
                with self._autocast():
                    loss, metrics = self.wrapped(batch.to(self.device, non_blocking=True))
                self.scaler.scale(loss.float() / len(batches)).backward()
            total_loss += loss.detach().float()
            for name, value in metrics.items():
                sums[name] = sums.get(name, 0) + value.float()
        n = len(batches)
        return total_loss / n, {name: value / n for name, value in sums.items()}

    def _optimizer_step(self, loss: Tensor, metrics: dict[str, Tensor]) -> bool:
        """Unscale, clip, check finiteness, step. Returns False if the step was skipped."""
        self.scaler.unscale_(self.optimizer)
        max_norm = self.settings.grad_clip if self.settings.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        metrics["grad_norm"] = grad_norm.detach()
        finite = bool(torch.isfinite(grad_norm) & torch.isfinite(loss))
        if finite:
            self.scaler.step(self.optimizer)
            self.scheduler.step()  # the schedule counts updates, not skipped steps
            self.nonfinite_streak = 0
        else:
            self.nonfinite_total += 1
            self.nonfinite_streak += 1
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if not finite and self.nonfinite_streak >= self.settings.max_nonfinite:
            terms = {"loss": loss, **metrics}
            bad = [n for n, v in terms.items() if not bool(torch.isfinite(v).all())]
            raise TrainingStoppedError(
                f"{self.nonfinite_streak} non-finite steps in a row, the last at step "
                f"{self.step + 1}: non-finite terms {bad}, loss scale "
                f"{self.scaler.get_scale() if self.scaler.is_enabled() else 1.0}. Lower "
                "optim.lr, set trainer.grad_clip, or use trainer.precision=32/bf16."
            )
        return finite

    def _reduce(self, sums: dict[str, Tensor], count: int) -> dict[str, float]:
        """The one place metrics are reduced across ranks (and synced to the host)."""
        if not sums:
            return {}
        names = sorted(sums)
        stacked = torch.stack([sums[n].float().to(self.device) for n in names]) / max(count, 1)
        values = all_reduce_mean(stacked, self.ctx).tolist()
        return dict(zip(names, values))

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Objective loss and metrics on the validation loader, with fixed random streams."""
        if self.val_loader is None:
            return {}
        self.module.eval()
        sums: dict[str, Tensor] = {}
        count = 0
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed + 7919)
            for i, batch in enumerate(self.val_loader):
                if i >= self.settings.val_batches:
                    break
                with self._autocast():
                    loss, metrics = self.module(batch.to(self.device))
                metrics = {"loss": loss.detach(), **metrics}
                for name, value in metrics.items():
                    sums[name] = sums.get(name, 0) + value.float()
                count += 1
        self.module.train()
        return self._reduce(sums, count)

    def fit(self, resume: str | bool = "auto") -> dict[str, float]:
        """Train to ``settings.max_steps``; returns the last logged training metrics."""
        s = self.settings
        resumed = self.maybe_resume(resume)
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.logger = MetricsLogger(self.run_dir, enabled=self.ctx.is_main,
                                    tensorboard=s.tensorboard,
                                    resume_step=self.step if resumed else None)
        if self.step >= s.max_steps:
            self._print(f"run already complete at step {self.step} (trainer.max_steps="
                        f"{s.max_steps}); nothing to train")
            return {}
        window_seconds = self._window_seconds()
        bar = tqdm(total=s.max_steps, initial=self.step, disable=not (s.progress and
                   self.ctx.is_main), dynamic_ncols=True, desc="train", file=sys.stderr)
        sums: dict[str, Tensor] = {}
        count, last = 0, {}
        tick, audio_since_tick = time.perf_counter(), 0.0
        batches = self._batches()
        self.module.train()
        with PreemptionHandler() as preemption:
            while self.step < s.max_steps:
                micro = [next(batches) for _ in range(s.accumulate)]
                loss, metrics = self._forward_backward(micro)
                stepped = self._optimizer_step(loss, metrics)
                self.step += 1
                hook = getattr(self.objective, "after_optimizer_step", None)
                if stepped and callable(hook):
                    hook(self.model, self.step)
                diagnostics = self._maybe_diagnose(micro)
                metrics["loss"] = loss
                for name, value in metrics.items():
                    sums[name] = sums.get(name, 0) + value
                count += 1
                audio_since_tick += sum(b.wav.shape[0] for b in micro) * window_seconds
                bar.update(1)
                if diagnostics or self.step % s.log_every == 0 or self.step == s.max_steps:
                    last = {**self._reduce(sums, count), **diagnostics}
                    elapsed = time.perf_counter() - tick
                    last["audio_s_per_s"] = audio_since_tick * self.ctx.world_size / elapsed
                    last["lr"] = self.scheduler.get_last_lr()[0]
                    last["nonfinite_steps"] = float(self.nonfinite_total)
                    self.logger.log(self.step, last, epoch=self.epoch)
                    bar.set_postfix(loss=f"{last['loss']:.3f}", acc=f"{last.get('acc', 0):.3f}",
                                    audio_s_per_s=f"{last['audio_s_per_s']:.0f}")
                    sums, count = {}, 0
                    tick, audio_since_tick = time.perf_counter(), 0.0
                if s.val_every and self.step % s.val_every == 0:
                    val = self.validate()
                    self.logger.log(self.step, val, split="val")
                    self._print(f"step {self.step} val " + " ".join(
                        f"{k}={v:.4f}" for k, v in sorted(val.items()) if "/" not in k))
                if any_rank(preemption.requested, self.ctx):
                    self._print(f"preemption signal ({preemption.received}): saving at step "
                                f"{self.step} and exiting with code {PREEMPTED_EXIT_CODE}")
                    self.save()
                    bar.close()
                    self.logger.close()
                    preemption.pass_on()  # e.g. to a launcher that requeues the job itself
                    raise PreemptedExit()
                if (s.checkpoint_every and self.step % s.checkpoint_every == 0) \
                        or self.step == s.max_steps:
                    self.save()
        bar.close()
        self.logger.close()
        return last

    def _maybe_diagnose(self, micro: list[Batch]) -> dict[str, float]:
        """Collapse metrics (``diag/...``) every ``diagnostics_every`` steps; raises on collapse.

        Frames are gathered over the last ``diagnostics_steps`` steps up to each diagnosis:
        the objective's ``diagnostic_features()`` if it has them (references, no copy), else
        the batches, whose ``z`` and ``c`` the model computes at the diagnosis (eval mode, no
        gradient). Only the diagnosis itself syncs with the host.
        """
        s = self.settings
        if not s.diagnostics_every:
            return {}
        steps_left = -self.step % s.diagnostics_every
        if steps_left >= s.diagnostics_steps:
            return {}
        hook = getattr(self.objective, "diagnostic_features", None)
        features = hook() if callable(hook) else {}
        if features:
            self._diag_frames.add(features)
        else:
            self._diag_batches.extend(micro)
        if steps_left:
            return {}
        features = self._diag_frames.take() or self._model_features(self._diag_batches)
        self._diag_batches = []
        values = self._reduce(collapse_metrics(features), 1)
        values = {f"diag/{name}": value for name, value in values.items()}
        message = s.collapse.violation(values, self.step)
        if message is not None:
            raise TrainingStoppedError(
                f"{message}. The diagnostics at that step: " + ", ".join(
                    f"{k}={v:.3g}" for k, v in sorted(values.items())))
        return values

    @torch.no_grad()
    def _model_features(self, batches: list[Batch]) -> dict[str, Tensor]:
        """The model's ``z`` and ``c`` frames on the newest ``batches`` (eval mode)."""
        zs: list[Tensor] = []
        cs: list[Tensor] = []
        self.model.eval()
        try:
            for batch in reversed(batches):
                with self._autocast():
                    z, c = self.model(batch.wav.to(self.device, non_blocking=True))
                zs.append(z.flatten(0, 1))
                cs.append(c.flatten(0, 1))
                if sum(len(x) for x in zs) >= self.settings.diagnostics_frames:
                    break
        finally:
            self.model.train()
        if not zs:
            return {}
        frames = self.settings.diagnostics_frames
        return {"z": torch.cat(zs)[:frames], "c": torch.cat(cs)[:frames]}

    def _window_seconds(self) -> float:
        sampler_window = getattr(self.sampler, "window", None)
        return float(sampler_window) / SAMPLE_RATE if sampler_window else 0.0


def _versions() -> dict[str, str]:
    import platform

    import ssl_speech

    versions = {"ssl_speech": ssl_speech.__version__, "torch": str(torch.__version__),
                "python": platform.python_version()}
    try:
        import torchaudio

        versions["torchaudio"] = str(torchaudio.__version__)
    except ImportError:
        pass
    return versions
