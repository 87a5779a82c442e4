"""Throughput of the full training step and of the data pipeline.

A *case* is a list of Hydra overrides (objective, encoder, context, heads, ...) on the training
config. For each case the benchmark builds the model, objective, optimizer and schedule exactly
as ``python -m ssl_speech.train`` does (``build_run``), and times the step the trainer runs
(``Trainer.train_step``: forward and backward, the optimizer step and the objective's post-step
hook) on one fixed batch of random audio of the configured window, after warm-up. It reports,
per case: milliseconds per step (median over repeats), sequences and audio seconds per second,
peak memory (resident set size of the process on CPU, ``torch.cuda.max_memory_allocated`` on
CUDA), the parameter count, the FLOPs of one step, and the fraction of the device's matrix
product throughput the step achieves, that throughput measured by the benchmark itself in the
run's precision. Every row records the CPU model (and the GPU, CUDA version and commit), and
:func:`markdown_table` refuses rows from different machines, so figures of two machines are
never read as one run. With ``profile`` each case also reports the step's time per phase
(encoder, context, heads, scores, backward, optimizer; :mod:`ssl_speech.studies.step_phases`).
With ``max_batch_size`` each case first finds the largest batch that fits (doubling from the
config's, on CUDA until the device runs out of memory) and is timed at it.

The data pipeline is timed alone: windows per second out of the configured loader (corpus,
window, batch size, workers), to set against the windows per second the step consumes.

Measuring on a shared machine: every case runs in its own process (its own memory high-water
mark, allocator and compile state), built and warmed up once; then the repeats are interleaved
(one repeat of every case, the matrix product probe and the data pipeline per round), so that a
burst of load from other processes hits every side alike. Compare ratios within one run rather
than absolute figures across runs.

FLOPs are counted from the shapes of one forward and backward pass
(:mod:`ssl_speech.studies.step_flops`); rows and tables are made by
:mod:`ssl_speech.studies.benchmark_report`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import multiprocessing as mp
import os
import tempfile
import time
import traceback
from dataclasses import dataclass
from typing import Any

import torch

from ssl_speech.studies.benchmark_machine import (
    _DTYPES,
    _is_out_of_memory,
    _synchronize,
    matmul_throughput,
    peak_memory_bytes,
    retain_freed_memory,
)
from ssl_speech.studies.benchmark_report import machine_info, markdown_table, result_rows
from ssl_speech.studies.benchmark_settings import (
    PRESETS,
    BenchmarkSettings,
    cases_for,
)
from ssl_speech.studies.step_flops import count_step_flops, extra_flop_formulas

__all__ = ["PRESETS", "BenchmarkSettings", "cases_for", "count_step_flops", "largest_batch",
           "machine_info", "markdown_table", "matmul_throughput", "run_benchmark",
           "worker_environment"]

@contextlib.contextmanager
def worker_environment(settings: BenchmarkSettings):
    """Environment variables a case process starts with, set here and restored on exit.

    ``OMP_WAIT_POLICY`` decides what an OpenMP thread does at the end of a parallel region
    while it waits for the others: spin (``active``) or sleep (``passive``). The runtime reads
    it once, when it loads, so it has to be in the environment of a fresh process. On a machine
    whose cores are shared with other jobs, spinning threads take the time slices the
    unfinished thread needs, and each of the thousands of small parallel regions of a step (a
    recurrent layer's time steps, the optimizer's per-tensor kernels) can wait for a scheduler
    tick. Measured on 2 CPU threads of a 2-core machine with two other busy processes: the
    forward and backward of the LSTM of the ``cpc_audio`` preset took 2.7 s (median) with the
    default policy and 0.11 s passive (0.09 s on 1 thread).
    """
    wanted = {}
    if settings.omp_wait_policy is not None:
        wanted["OMP_WAIT_POLICY"] = settings.omp_wait_policy.upper()
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield wanted
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class _CaseSpec:
    name: str
    overrides: tuple[str, ...]
    settings: BenchmarkSettings
    run_dir: str


def compose_case(overrides: tuple[str, ...], settings: BenchmarkSettings, run_dir: str):
    """The resolved training config of a case (:func:`ssl_speech.config.compose`)."""
    from ssl_speech.config import compose

    fixed = [f"run_dir={run_dir}", "run_name=benchmark", "probe.enabled=false",
             f"trainer.device={settings.device}", f"trainer.precision={settings.precision}",
             "trainer.progress=false", "trainer.tensorboard=false"]
    if settings.batch_size is not None:
        fixed.append(f"data.batch_size={settings.batch_size}")
    return compose([*settings.overrides, *overrides, *fixed])


class _StepRunner:
    """One case's model, objective and trainer, and a fixed batch of random audio."""

    def __init__(self, spec: _CaseSpec) -> None:
        from ssl_speech.data.batch import Batch
        from ssl_speech.train import build
        from ssl_speech.train.distributed import DistributedContext, resolve_device

        settings = spec.settings
        cfg = compose_case(spec.overrides, settings, spec.run_dir)
        self.cfg = cfg
        self.device = resolve_device(settings.device)
        ctx = DistributedContext(device=self.device)
        parts = build.build_run(cfg, ctx, data=False)
        self.model = parts.model
        self.objective = parts.objective
        self.trainer = build.build_trainer(cfg, parts, ctx, run_dir=spec.run_dir)
        self.batch_size = int(cfg.data.batch_size)
        self.window = int(cfg.data.window)
        generator = torch.Generator().manual_seed(int(cfg.seed))
        wav = 0.1 * torch.randn(self.batch_size, 1, self.window, generator=generator)
        self.batch = Batch(wav=wav, speaker=torch.zeros(self.batch_size, dtype=torch.long))
        if self.device.type == "cuda":
            self.batch = self.batch.pin_memory()
        self.parameters = sum(p.numel() for p in parts.params)
        self.flops = count_step_flops(self.trainer.module, self.batch.to(self.device),
                                      self.trainer.autocast())
        parts.optimizer.zero_grad(set_to_none=True)
        if settings.compile:
            self.trainer.compile()
        self.trainer.module.train()

    def step(self) -> None:
        """One training step exactly as ``Trainer.fit`` runs it (no logging or checkpoints)."""
        self.trainer.train_step([self.batch])

    def time_steps(self, count: int) -> float:
        """Mean seconds per step over ``count`` consecutive steps."""
        _synchronize(self.device)
        start = time.perf_counter()
        for _ in range(count):
            self.step()
        _synchronize(self.device)
        return (time.perf_counter() - start) / count

    def describe(self) -> dict[str, Any]:
        cfg = self.cfg
        objective = cfg.objective
        return {
            "objective": str(objective._target_).rsplit(".", 1)[-1],
            "encoder": str(cfg.encoder._target_).rsplit(".", 1)[-1],
            "context": str(cfg.context._target_).rsplit(".", 1)[-1],
            "head": str(objective.get("head", "")),
            "score_method": str(objective.get("score_method", "")),
            "optimizer": str(cfg.optim.optimizer._target_).rsplit(".", 1)[-1],
            "fused_optimizer": bool(cfg.optim.optimizer.get("fused", False)),
            "batch_size": self.batch_size,
            "window": self.window,
            "parameters": self.parameters,
            "flops_per_step": self.flops,
        }


class _DataRunner:
    """The data pipeline of a config alone: the trainer's loader over the configured corpus."""

    def __init__(self, spec: _CaseSpec) -> None:
        from ssl_speech.train import build

        cfg = compose_case(spec.overrides, spec.settings, spec.run_dir)
        source = build.resolve_data_source(cfg.data, progress=False)
        corpus = build.load_split_corpus(source, source.train_split, str(cfg.data.on_error),
                                         min_samples=int(cfg.data.window))
        self.loader, self.sampler = build.build_loader(corpus, cfg.data, int(cfg.seed), 0, 1)
        self.batches = spec.settings.data_batches
        self.epoch = 0
        self.iterator = self._fresh_iterator()
        self.info = {"num_workers": int(cfg.data.num_workers), "window": int(cfg.data.window),
                     "batch_size": int(cfg.data.batch_size),
                     "corpus_hours": round(corpus.total_seconds / 3600, 3)}

    def _fresh_iterator(self):
        self.sampler.set_epoch(self.epoch)
        self.epoch += 1
        return iter(self.loader)

    def windows_per_second(self) -> float:
        windows = 0
        start = time.perf_counter()
        for _ in range(self.batches):
            try:
                batch = next(self.iterator)
            except StopIteration:
                self.iterator = self._fresh_iterator()
                batch = next(self.iterator)
            windows += batch.wav.shape[0]
        return windows / (time.perf_counter() - start)


# ------------------------------------------------------------------------ batch search
def _peak_at_batch(spec: _CaseSpec, batch_size: int) -> int | None:
    """Peak memory of two uncompiled steps of the case at ``batch_size``; ``None`` if the
    device runs out of memory."""
    settings = dataclasses.replace(spec.settings, batch_size=batch_size, compile=False,
                                   profile=False, max_batch_size=None)
    device = torch.device(settings.device)
    gc.collect()  # nothing of an earlier size may hold memory now
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    runner = None
    try:
        runner = _StepRunner(dataclasses.replace(spec, settings=settings))
        runner.step()
        runner.step()  # the optimizer's state exists from the first step on
        _synchronize(runner.device)
        return peak_memory_bytes(device)
    except RuntimeError as error:
        if not _is_out_of_memory(error):
            raise
        return None
    finally:
        del runner
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def largest_batch(spec: _CaseSpec) -> tuple[int, list[dict[str, Any]]]:
    """The largest batch of the case that fits, and every size tried with its peak memory.

    Doubles from ``settings.batch_size`` (or the config's) up to ``settings.max_batch_size``;
    on CUDA it stops at the first size that runs out of memory or whose peak exceeds
    ``memory_headroom`` of the device. On a CPU nothing runs out gracefully, so only the bound
    stops it: keep the bound small there.
    """
    settings = spec.settings
    if settings.max_batch_size is None:
        raise ValueError("largest_batch needs settings.max_batch_size")
    device = torch.device(settings.device)
    total = (torch.cuda.get_device_properties(device).total_memory
             if device.type == "cuda" else None)
    start = settings.batch_size or int(
        compose_case(spec.overrides, settings, spec.run_dir).data.batch_size)
    batch, best, tried = min(start, settings.max_batch_size), None, []
    while True:
        peak = _peak_at_batch(spec, batch)
        tried.append({"batch_size": batch,
                      "peak_memory_mb": None if peak is None else peak / 2**20})
        if peak is None:
            break
        best = batch
        if batch >= settings.max_batch_size or (
                total is not None and peak > settings.memory_headroom * total):
            break
        batch = min(2 * batch, settings.max_batch_size)
    if best is None:
        raise RuntimeError(f"case {spec.name!r}: batch {batch} already runs out of memory on "
                           f"{settings.device}; give a smaller --batch-size to start from")
    return best, tried


def _autocast(settings: BenchmarkSettings) -> contextlib.AbstractContextManager:
    if settings.precision == "32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(settings.device).type, dtype=_DTYPES[settings.precision])


def _worker(conn, spec: _CaseSpec, kind: str) -> None:
    """A case's process: build, warm up, then answer timing requests until told to finish."""
    try:
        settings = spec.settings
        if settings.threads is not None:
            torch.set_num_threads(settings.threads)
        if settings.retain_freed_memory and not settings.device.startswith("cuda"):
            retain_freed_memory()
        clock = None
        if kind == "data":
            runner = _DataRunner(spec)
            runner.windows_per_second()  # warm-up: first reads, worker start-up
            conn.send(("ready", runner.info))
            while (message := conn.recv())[0] == "time":
                conn.send(("time", runner.windows_per_second()))
        else:
            tried = None
            if settings.max_batch_size is not None:
                found, tried = largest_batch(spec)
                settings = dataclasses.replace(settings, batch_size=found, max_batch_size=None)
                spec = dataclasses.replace(spec, settings=settings)
            runner = _StepRunner(spec)
            clock = None
            if settings.profile:
                from ssl_speech.studies.step_phases import PhaseClock, phase_flops

                flops = phase_flops(runner.trainer.module, runner.batch.to(runner.device),
                                    _autocast(settings), runner.flops, extra_flop_formulas())
            start = time.perf_counter()
            for _ in range(settings.warmup):
                runner.step()
            _synchronize(runner.device)
            info = runner.describe()
            info["warmup_s"] = time.perf_counter() - start
            info["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")  # as this process saw it
            if tried is not None:
                info["batch_search"] = tried
            if settings.profile:
                info["phase_flops"] = flops
                clock = PhaseClock(runner.trainer.module, runner.trainer.optimizer,
                                   runner.device)
            if runner.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(runner.device)
            conn.send(("ready", info))
            while (message := conn.recv())[0] == "time":
                if clock is None:
                    conn.send(("time", runner.time_steps(message[1])))
                else:
                    seconds = [clock.time_step(runner.step) for _ in range(message[1])]
                    conn.send(("time", sum(seconds) / len(seconds)))
        done = {"peak_memory_bytes": peak_memory_bytes(torch.device(settings.device))}
        if clock is not None:
            done["phase_s"] = clock.mean_seconds()
            done["phase_cpu_s"] = clock.mean_cpu_seconds()
        conn.send(("done", done))
    except Exception:  # the parent reports it with the case's name
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


class _Worker:
    def __init__(self, context, spec: _CaseSpec, kind: str) -> None:
        self.name = spec.name
        self.conn, child = context.Pipe()
        # Not a daemon: a data-pipeline case may start loader workers of its own. A worker whose
        # parent is gone sees the pipe close and exits.
        self.process = context.Process(target=_worker, args=(child, spec, kind))
        with worker_environment(spec.settings):
            self.process.start()
        child.close()

    def request(self, *message) -> Any:
        if message:
            self.conn.send(message)
        status, payload = self.conn.recv()
        if status == "error":
            raise RuntimeError(f"benchmark case {self.name!r} failed:\n{payload}")
        return payload

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            self.conn.close()
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.terminate()


# ------------------------------------------------------------------------ the run
def run_benchmark(cases: dict[str, tuple[str, ...]], settings: BenchmarkSettings,
                  log=None) -> list[dict[str, Any]]:
    """Time every case's training step (and the data pipeline), interleaved.

    Args:
        cases: name -> Hydra overrides (see :data:`PRESETS` and :func:`cases_for`).
        settings: what to measure.
        log: called with a line of progress text, or ``None``.

    Returns:
        One dict per case (``kind="step"``), then one for the data pipeline (``kind="data"``)
        and one for the matrix product probe (``kind="matmul"``); every dict is JSON-ready.
    """
    if not cases:
        raise ValueError("no benchmark case given")
    say = log or (lambda line: None)
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    context = mp.get_context("spawn")
    workers: list[_Worker] = []
    infos: dict[str, dict[str, Any]] = {}
    times: dict[str, list[float]] = {}
    matmul: list[float] = []
    matmul_cpu: list[float] = []  # per CPU second, for profiles on a CPU
    data_rates: list[float] = []
    data_info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ssl_speech_benchmark_") as run_dir:
        try:
            # Built one at a time: building and warming up are heavy and must not overlap.
            for name, overrides in cases.items():
                say(f"building {name}: {' '.join(overrides)}")
                worker = _Worker(context, _CaseSpec(name, tuple(overrides), settings, run_dir),
                                 "step")
                workers.append(worker)
                infos[name] = worker.request()
                times[name] = []
            data_worker = None
            if settings.data:
                first = next(iter(cases.values()))
                say("building the data pipeline")
                data_worker = _Worker(context, _CaseSpec("data", tuple(first), settings,
                                                         run_dir), "data")
                workers.append(data_worker)
                data_info = data_worker.request()
            for round_index in range(settings.repeats):
                matmul.append(matmul_throughput(settings.device, settings.precision,
                                                settings.matmul_size))
                if settings.profile and not settings.device.startswith("cuda"):
                    matmul_cpu.append(matmul_throughput(
                        settings.device, settings.precision, settings.matmul_size,
                        clock=time.process_time))
                for worker in workers:
                    if worker is data_worker:
                        data_rates.append(worker.request("time", None))
                    else:
                        times[worker.name].append(
                            worker.request("time", settings.steps_per_repeat))
                say(f"round {round_index + 1}/{settings.repeats}: " + ", ".join(
                    f"{name} {1e3 * t[-1]:.0f} ms" for name, t in times.items()))
            for worker in workers:
                payload = worker.request("finish")
                if worker is data_worker:
                    data_info.update(payload)
                else:
                    infos[worker.name].update(payload)
        finally:
            for worker in workers:
                worker.close()
    return result_rows(infos, times, matmul, data_info, data_rates, settings, matmul_cpu)
