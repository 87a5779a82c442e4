"""The training loop: one explicit loop in plain PyTorch.

:meth:`Trainer.train_step` is one optimizer step: ``accumulate`` micro-batches (gradient sync
only on the last one under DDP), autocast in the configured precision, an fp16 gradient scaler
where needed, clipping, a non-finite guard, the optimizer and schedule, then the objective's
``after_optimizer_step`` hook. :meth:`Trainer.fit` repeats it, and after each step watches for
collapse, logs, validates, honours a preemption signal and checkpoints, each at its interval.
The trainer knows nothing of a particular objective: it optimises ``model`` and ``objective``
parameters together and averages whatever metrics the objective returns.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ssl_speech.data.audio import SAMPLE_RATE
from ssl_speech.data.batch import Batch
from ssl_speech.objectives.base import Objective
from ssl_speech.runs import checkpoint as ckpt
from ssl_speech.train.collapse_watch import CollapseWatch
from ssl_speech.train.distributed import (
    DistributedContext,
    all_reduce_mean,
    any_rank,
    collective,
    gather_objects,
)
from ssl_speech.train.errors import TrainingStoppedError
from ssl_speech.train.preemption import PREEMPTED_EXIT_CODE, PreemptionHandler
from ssl_speech.train.resume_check import check_resume_config, find_resume_checkpoint
from ssl_speech.train.rng import capture_rng_state, restore_rng_state
from ssl_speech.train.run_logs import MetricWindow, RunLogs
from ssl_speech.train.settings import PRECISIONS, TrainerSettings

__all__ = ["PreemptedExit", "TrainModule", "Trainer", "TrainerSettings", "TrainingStoppedError"]

class PreemptedExit(SystemExit):
    """Raised after a preemption checkpoint; exits with :data:`PREEMPTED_EXIT_CODE`."""

    def __init__(self) -> None:
        super().__init__(PREEMPTED_EXIT_CODE)


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
    ``objective`` is an :class:`~ssl_speech.objectives.base.Objective`; its hooks
    (``after_optimizer_step``, ``extra_state``/``load_extra_state``, ``diagnostic_features``)
    are called directly.
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        train_loader: Any,
        train_sampler: Any,
        run_dir: str | Path,
        settings: TrainerSettings,
        ctx: DistributedContext | None = None,
        val_loader: Any = None,
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
        settings.check_device(self.device)
        self.amp_dtype = PRECISIONS[settings.precision]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=settings.precision == "16")
        self.step = 0
        self.epoch = 0
        self.consumed = 0  # batches of the current epoch already used
        self.nonfinite_total = 0
        self.nonfinite_streak = 0
        self.skipped_windows = 0  # windows whose audio failed at read time (see data.on_error)
        self.skipped_files: set[str] = set()
        self.last_step_updated = False  # whether the newest train_step changed the weights
        self.module = TrainModule(model, objective).to(self.device)
        self.wrapped: nn.Module = self.module
        if self.ctx.enabled:
            self.wrapped = nn.parallel.DistributedDataParallel(
                self.module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=settings.find_unused_parameters,
            )
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.collapse_watch = CollapseWatch(
            settings.diagnostics_every, settings.diagnostics_steps, settings.diagnostics_frames,
            settings.collapse, reduce=lambda values: self._reduce(values, 1),
            autocast=self.autocast, device=self.device)
        self.logs: RunLogs | None = None
        self._bar: tqdm | None = None

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": 1,
            "model": self.model.state_dict(),
            "objective": self.objective.state_dict(),
            "objective_extra": self.objective.extra_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "consumed": self.consumed,
            "sampler": self.sampler.state_dict(consumed_batches=self.consumed),
            "rng": gather_objects(capture_rng_state(), self.ctx),
            "world_size": self.ctx.world_size,
            "counters": {"nonfinite_total": self.nonfinite_total,
                         "nonfinite_streak": self.nonfinite_streak,
                         "skipped_windows": self.skipped_windows,
                         "skipped_files": sorted(self.skipped_files)},
            "config": self.config,
            "versions": ckpt.library_versions(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.objective.load_state_dict(state["objective"])
        self.objective.load_extra_state(state.get("objective_extra", {}))
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
        self.skipped_windows = int(counters.get("skipped_windows", 0))
        self.skipped_files = set(counters.get("skipped_files", ()))
        rng = state.get("rng", [])
        if int(state.get("world_size", 1)) == self.ctx.world_size and len(rng) > self.ctx.rank:
            restore_rng_state(rng[self.ctx.rank])
        else:
            self._print(
                f"resuming with {self.ctx.world_size} processes from a checkpoint of "
                f"{state.get('world_size')}: data order is kept, random streams are reseeded"
            )
            torch.manual_seed(self.seed + 1000 * self.step + self.ctx.rank)

    def save(self) -> Path | None:
        """Every rank takes part (RNG states are gathered); rank 0 writes."""
        state = self.state_dict()
        path, failure = None, None
        if self.ctx.is_main:
            try:
                path = ckpt.save_checkpoint(state, ckpt.checkpoint_path(self.run_dir, self.step))
                ckpt.prune_checkpoints(self.run_dir, self.settings.keep_last)
            except ckpt.CheckpointError as error:
                failure = error
        # every rank learns of a failed write (a full disk), instead of waiting at a barrier
        if any_rank(failure is not None, self.ctx):
            raise failure or ckpt.CheckpointError(
                f"rank 0 could not write the checkpoint of step {self.step}; see its error")
        return path

    def maybe_resume(self, resume: str | bool) -> bool:
        """``resume``: ``auto`` (if the run has a checkpoint), ``true``, ``false``, or a path.

        A checkpoint of a different config is refused (``trainer.resume_changed``).
        """
        found = find_resume_checkpoint(resume, self.run_dir)
        if found is None:
            return False
        state = ckpt.load_checkpoint(found, map_location=self.device)
        changes = check_resume_config(state.get("config") or {}, self.config,
                                      self.settings.resume_changed, found)
        if changes:
            self._print(f"resuming {found} with a changed config (trainer.resume_changed="
                        "allow): " + "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changes))
        self.load_state_dict(state)
        self._print(f"resumed from {found} at step {self.step} (epoch {self.epoch}, "
                    f"batch {self.consumed})")
        return True

    # ----------------------------------------------------------------- one step
    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward pass's autocast context in the configured precision."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def compile(self, **options: Any) -> None:
        """Run the training forward pass through ``torch.compile(**options)``."""
        self.wrapped = torch.compile(self.wrapped, **options)

    def train_step(self, micro_batches: list[Batch]) -> dict[str, Tensor]:
        """One optimizer step on ``micro_batches`` (gradients accumulated over them).

        Returns the step's metrics as 0-dim tensors on the device (no host sync): the
        objective's, averaged over the micro-batches, with ``loss`` and ``grad_norm``.
        A non-finite step changes no weight (:attr:`last_step_updated` is false) and is
        counted; too many in a row raise :class:`TrainingStoppedError`.
        """
        with collective("the gradient all-reduce of a training step", self.ctx,
                        computing=True):
            loss, metrics = self._forward_backward(micro_batches)
        self.last_step_updated = self._optimizer_step(loss, metrics)
        self.step += 1
        if self.last_step_updated:
            self.objective.after_optimizer_step(self.model, self.step)
        metrics["loss"] = loss
        return metrics

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
                with self.autocast():
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
                with self.autocast():
                    loss, metrics = self.module(batch.to(self.device))
                metrics = {"loss": loss.detach(), **metrics}
                for name, value in metrics.items():
                    sums[name] = sums.get(name, 0) + value.float()
                count += 1
        self.module.train()
        return self._reduce(sums, count)

    # ----------------------------------------------------------------- the loop
    def fit(self, resume: str | bool = "auto") -> dict[str, float]:
        """Train to ``settings.max_steps``; returns the last logged training metrics."""
        s = self.settings
        resumed = self.maybe_resume(resume)
        self.logs = RunLogs(self.run_dir, s, self.ctx.is_main, self.config, self.step,
                            resumed)
        if self.step >= s.max_steps:
            self._print(f"run already complete at step {self.step} (trainer.max_steps="
                        f"{s.max_steps}); nothing to train")
            self._close_logs()
            return {}
        self._bar = tqdm(total=s.max_steps, initial=self.step, disable=not (
            s.progress and self.ctx.is_main), dynamic_ncols=True, desc="train", file=sys.stderr)
        window, last = MetricWindow(), {}
        batches = self._batches()
        self.module.train()
        with PreemptionHandler() as preemption:
            while self.step < s.max_steps:
                micro = [next(batches) for _ in range(s.accumulate)]
                metrics = self.train_step(micro)
                self._bar.update(1)
                diagnostics = self.collapse_watch.after_step(self.step, self.model,
                                                             self.objective, micro)
                window.add(metrics, self._audio_seconds(micro))
                if diagnostics or self.step % s.log_every == 0 or self.step == s.max_steps:
                    last = self._log_training(window, diagnostics)
                    window = MetricWindow()
                self._maybe_validate()
                self._exit_if_preempted(preemption, saved=False)
                self._maybe_checkpoint()
            # A signal that came during the final checkpoint: the run is complete and saved.
            self._exit_if_preempted(preemption, saved=True)
        self._close_logs()
        return last

    def _batches(self) -> Iterator[Batch]:
        """Batches across epochs; ``self.epoch``/``self.consumed`` track what was handed out."""
        while True:
            self.sampler.set_epoch(self.epoch)
            for batch in self.train_loader:
                self.consumed += 1
                self.skipped_windows += len(batch.skipped)
                self.skipped_files.update(path for path, _ in batch.skipped)
                if batch.size:  # every window of an empty batch failed to read
                    yield batch
            self.epoch += 1
            self.consumed = 0

    def _log_training(self, window: MetricWindow, diagnostics: dict[str, float],
                      ) -> dict[str, float]:
        values = {**self._reduce(window.sums, window.count), **diagnostics}
        values["audio_s_per_s"] = window.audio_seconds * self.ctx.world_size / window.elapsed()
        values["lr"] = self.scheduler.get_last_lr()[0]
        values["nonfinite_steps"] = float(self.nonfinite_total)
        values["skipped_windows"] = float(self.skipped_windows)
        values["skipped_files"] = float(len(self.skipped_files))
        self._log(values, "train", epoch=self.epoch)
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{values['loss']:.3f}", acc=f"{values.get('acc', 0):.3f}",
                                  audio_s_per_s=f"{values['audio_s_per_s']:.0f}")
        return values

    def _maybe_validate(self) -> None:
        every = self.settings.val_every
        if not every or self.step % every:
            return
        values = self.validate()
        self._log(values, "val")
        self._print(f"step {self.step} val " + " ".join(
            f"{k}={v:.4f}" for k, v in sorted(values.items()) if "/" not in k))

    def _exit_if_preempted(self, preemption: PreemptionHandler, saved: bool) -> None:
        """On a preemption signal (on any rank): checkpoint unless ``saved`` at this step,
        then exit with code 75. A second signal meanwhile is ignored (the handler stays)."""
        if not any_rank(preemption.requested, self.ctx):
            return
        where = "training is complete and saved" if saved else "saving"
        received = preemption.received.name if preemption.received else "on another rank"
        self._print(f"preemption signal ({received}) at step {self.step}: {where}; exiting "
                    f"with code {PREEMPTED_EXIT_CODE}, the same command resumes the run")
        if not saved:
            self.save()
        self._close_logs()
        preemption.pass_on()  # e.g. to a launcher that requeues the job itself
        raise PreemptedExit()

    def _maybe_checkpoint(self) -> None:
        every = self.settings.checkpoint_every
        if (every and self.step % every == 0) or self.step == self.settings.max_steps:
            self.save()

    # ----------------------------------------------------------------- output
    def _log(self, values: dict[str, float], split: str, **extra: Any) -> None:
        if self.logs is not None:
            self.logs.log(self.step, values, split, **extra)

    def _close_logs(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.logs is not None:
            self.logs.close()
            self.logs = None

    def _print(self, message: str) -> None:
        if self.ctx.is_main:
            tqdm.write(message, file=sys.stderr)

    def _audio_seconds(self, micro: list[Batch]) -> float:
        window = getattr(self.sampler, "window", None)
        seconds = float(window) / SAMPLE_RATE if window else 0.0
        return sum(b.wav.shape[0] for b in micro) * seconds
