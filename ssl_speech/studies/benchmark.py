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

FLOPs are counted from the shapes of one forward and backward pass (``torch.utils.flop_counter``
plus formulas for the CPU attention and recurrent kernels it does not know): matrix products,
convolutions, attention and recurrent layers; elementwise work and the optimizer are not counted.
Scores are counted in their gather form (each prediction times its own candidates: the
arithmetic the loss needs), whichever scoring method runs, so the dense method's extra products
never inflate the achieved fraction.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime
import gc
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import torch

from ssl_speech.data.audio import SAMPLE_RATE

PRESETS: dict[str, dict[str, tuple[str, ...]]] = {
    # The CPC_audio default configuration (configs/experiment/cpc_audio.yaml), and aligned CPC
    # (K = 8, M = 12) and linear heads under the same encoder, context, negatives and optimizer.
    "cpc_audio": {
        "cpc_audio": ("experiment=cpc_audio",),
        "cpc_audio-linear": ("experiment=cpc_audio", "objective.head=linear"),
        "acpc": ("experiment=cpc_audio", "objective=acpc", "~objective.num_steps"),
        "acpc-linear": ("experiment=cpc_audio", "objective=acpc", "~objective.num_steps",
                        "objective.head=linear"),
    },
}
PRECISIONS = ("32", "bf16", "16")
OMP_WAIT_POLICIES = ("passive", "active")
_DTYPES = {"32": torch.float32, "bf16": torch.bfloat16, "16": torch.float16}


@dataclass
class BenchmarkSettings:
    """What to measure and how.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        precision: ``"32"``, ``"bf16"`` (autocast) or ``"16"`` (CUDA, with a gradient scaler).
        batch_size: sequences per step; ``None`` keeps the config's.
        threads: torch CPU threads in every process; ``None`` keeps torch's default.
        compile: run the model and objective through ``torch.compile``.
        warmup: untimed steps per case before the first repeat (compilation happens there).
        repeats: timed rounds; the step time is the median over them.
        steps_per_repeat: steps timed together in one repeat (their mean is the repeat's time).
        retain_freed_memory: on Linux CPU, keep freed memory in the process instead of
            returning it to the system (see :func:`retain_freed_memory`).
        omp_wait_policy: ``OMP_WAIT_POLICY`` of the case processes, ``"passive"`` or
            ``"active"``; ``None`` inherits this process's environment (see
            :func:`worker_environment`).
        data: also time the data pipeline.
        data_batches: batches the data pipeline delivers per repeat.
        matmul_size: side of the square matrices of the throughput probe.
        overrides: Hydra overrides applied to every case (before the case's own).
        profile: also time every phase of the step (``step_phases``); not with ``compile``.
        max_batch_size: search each case's largest batch that fits, doubling from
            ``batch_size`` (or the config's) up to this bound; ``None``: no search.
        memory_headroom: during the search on CUDA, stop doubling once a step's peak memory
            exceeds this fraction of the device's memory (the next doubling would not fit,
            and a compiled step or a fragmented allocator needs some room).
    """

    device: str = "cpu"
    precision: str = "32"
    batch_size: int | None = None
    threads: int | None = None
    compile: bool = False
    warmup: int = 2
    repeats: int = 5
    steps_per_repeat: int = 1
    retain_freed_memory: bool = False
    omp_wait_policy: str | None = None
    data: bool = True
    data_batches: int = 50
    matmul_size: int = 2048
    overrides: tuple[str, ...] = field(default_factory=tuple)
    profile: bool = False
    max_batch_size: int | None = None
    memory_headroom: float = 0.45

    def __post_init__(self) -> None:
        self.precision = str(self.precision)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}: expected one of {PRECISIONS}")
        if self.precision == "16" and not self.device.startswith("cuda"):
            raise ValueError("precision=16 needs a CUDA device; use bf16 on CPU")
        for name in ("warmup", "repeats", "steps_per_repeat", "data_batches", "matmul_size"):
            minimum = 0 if name == "warmup" else 1
            if getattr(self, name) < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {getattr(self, name)}")
        for name in ("batch_size", "threads", "max_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or None for the default), got {value}")
        if self.omp_wait_policy is not None and self.omp_wait_policy not in OMP_WAIT_POLICIES:
            raise ValueError(f"omp_wait_policy={self.omp_wait_policy!r}: expected one of "
                             f"{OMP_WAIT_POLICIES} or None")
        self.overrides = tuple(self.overrides)
        if self.profile and self.compile:
            raise ValueError("profile needs the uncompiled step (its phases are read off "
                             "module hooks, which a compiled graph does not call); drop one")
        if not 0.0 < self.memory_headroom <= 1.0:
            raise ValueError(f"memory_headroom must be in (0, 1], got {self.memory_headroom}")


def cases_for(objectives: list[str], heads: list[str], encoders: list[str],
              contexts: list[str]) -> dict[str, tuple[str, ...]]:
    """Cases named ``objective-head-encoder-context`` for every combination of the choices.

    ``heads`` applies to objectives whose config has a ``head`` (CPC, ACPC, RPC); others get
    one case per encoder and context. Config group names are those of ``configs/``.
    """
    cases: dict[str, tuple[str, ...]] = {}
    for objective in objectives:
        for encoder in encoders:
            for context in contexts:
                base = (f"objective={objective}", f"encoder={encoder}", f"context={context}")
                if _objective_has_head(objective):
                    for head in heads:
                        name = f"{objective}-{head}-{encoder}-{context}"
                        cases[name] = (*base, f"objective.head={head}")
                else:
                    cases[f"{objective}-{encoder}-{context}"] = base
    return cases


def _objective_has_head(objective: str) -> bool:
    from omegaconf import OmegaConf

    from ssl_speech.config import config_dir

    path = os.path.join(config_dir(), "objective", f"{objective}.yaml")
    if not os.path.isfile(path):
        raise ValueError(f"no objective config {objective!r} in {config_dir()}/objective")
    return "head" in OmegaConf.load(path)


# ------------------------------------------------------------------------ host settings
def retain_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of unmapping it (Linux only).

    A training step allocates and frees the same large activation buffers every time. glibc
    serves each large request with a fresh ``mmap`` and unmaps it on free, so every step
    page-faults and zero-fills its activations again (measured: about 95 000 page faults per
    forward and backward of the CPC encoder at batch 8). With ``M_MMAP_MAX = 0`` large blocks
    come from the heap, and a huge ``M_TRIM_THRESHOLD`` keeps the heap from being returned, so
    later steps reuse warm pages. Resident memory then stays at its high-water mark. Returns
    whether the setting was applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 62))


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


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: ``max_memory_allocated``; CPU: the process's peak resident set size (VmHWM)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource  # not on Windows; ru_maxrss is in kilobytes on Linux, bytes on macOS

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_throughput(device: torch.device | str, precision: str = "32", size: int = 2048,
                      repeats: int = 3, min_seconds: float = 0.2, clock=time.perf_counter,
                      ) -> float:
    """Measured FLOP/s of ``size × size`` matrix products in ``precision``: the device's
    attainable rate for dense work. Each of ``repeats`` measurements runs back-to-back products
    for at least ``min_seconds`` (one product on a CPU, many on a GPU); the best one counts.
    ``clock=time.process_time`` gives FLOPs per CPU second of the process's threads instead
    (CPU only), the rate to set a profile's CPU seconds against."""
    device = torch.device(device)
    dtype = _DTYPES[str(precision)]
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        _synchronize(device)
        start, count = clock(), 0
        while True:
            torch.mm(a, b)
            count += 1
            if count & (count - 1) == 0:  # check the clock at powers of two: few syncs
                _synchronize(device)
                elapsed = clock() - start
                if elapsed >= min_seconds:
                    break
        best = max(best, 2.0 * size**3 * count / elapsed)
    return best


# ------------------------------------------------------------------------ FLOP counting
def _rnn_flops(input_shape, weight_shapes) -> int:
    """Forward FLOPs of a recurrent layer: every 2-D weight multiplies one vector per frame
    (input ``(T, B, I)`` or ``(B, T, I)``, or ``(frames, I)`` when packed)."""
    frames = input_shape[0] * input_shape[1] if len(input_shape) == 3 else input_shape[0]
    return sum(2 * frames * shape[0] * shape[1] for shape in weight_shapes if len(shape) == 2)


def _mkldnn_rnn_flops(input_shape, w0, w1, *args, out_shape=None, **kwargs) -> int:
    return _rnn_flops(input_shape, [w0, w1])


def _mkldnn_rnn_backward_flops(input_shape, w0, w1, *args, out_shape=None, **kwargs) -> int:
    return 2 * _rnn_flops(input_shape, [w0, w1])


def _cudnn_rnn_flops(input_shape, weights, *args, out_shape=None, **kwargs) -> int:
    return _rnn_flops(input_shape, weights)


def _cudnn_rnn_backward_flops(input_shape, weights, *args, out_shape=None, **kwargs) -> int:
    return 2 * _rnn_flops(input_shape, weights)


def _cpu_attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def _cpu_attention_backward_flops(grad_out, query, key, value, *args, out_shape=None,
                                  **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out, query, key, value)


def _extra_flop_formulas() -> dict:
    aten = torch.ops.aten
    formulas = {
        aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward_flops,
        aten.mkldnn_rnn_layer: _mkldnn_rnn_flops,
        aten.mkldnn_rnn_layer_backward: _mkldnn_rnn_backward_flops,
    }
    if hasattr(aten, "_cudnn_rnn"):
        formulas[aten._cudnn_rnn] = _cudnn_rnn_flops
        formulas[aten._cudnn_rnn_backward] = _cudnn_rnn_backward_flops
    return formulas


def count_step_flops(module: torch.nn.Module, batch: Any,
                     autocast: contextlib.AbstractContextManager | None = None) -> int:
    """FLOPs of one forward and backward pass of ``module(batch) -> (loss, metrics)``.

    Counted from operand shapes (module docstring); an objective with a ``score_method`` is
    counted with ``"gather"``. Gradients are left in the parameters' ``.grad``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    objectives = [m for m in module.modules() if hasattr(m, "score_method")]
    saved = [m.score_method for m in objectives]
    try:
        for m in objectives:
            m.score_method = "gather"
        with FlopCounterMode(display=False, custom_mapping=_extra_flop_formulas()) as counter:
            with autocast or contextlib.nullcontext():
                loss, _ = module(batch)
            loss.float().backward()
    finally:
        for m, method in zip(objectives, saved):
            m.score_method = method
    return int(counter.get_total_flops())


# ------------------------------------------------------------------------ one case
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
def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        marker in text for marker in ("out of memory", "ALLOC_FAILED", "NOT_ENOUGH_WORKSPACE"))


def _peak_at_batch(spec: _CaseSpec, batch_size: int) -> int | None:
    """Peak memory of two uncompiled steps of the case at ``batch_size``; ``None`` if the
    device runs out of memory."""
    settings = dataclasses.replace(spec.settings, batch_size=batch_size, compile=False,
                                   profile=False, max_batch_size=None)
    device = torch.device(settings.device)
    if device.type == "cuda":
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
                                    _autocast(settings), runner.flops, _extra_flop_formulas())
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
def machine_info(device: str, threads: int | None) -> dict[str, Any]:
    """Date, versions, commit and hardware, recorded with every result.

    ``machine`` is what the step ran on (the GPU's name on CUDA, else the CPU model);
    ``cpu_model`` is always recorded, as the host's CPU also shapes a GPU step's time.
    """
    cpu = _cpu_name()
    info = {
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "commit": _git_commit(),
        "device": device,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu,
        "machine": cpu,
        "gpu": None,
        # Other processes' load skews every absolute figure on a shared machine.
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = info["machine"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _git_commit() -> str | None:
    """The checkout's commit (``+dirty`` with uncommitted changes), or ``None`` outside one."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
    return _results(infos, times, matmul, data_info, data_rates, settings, matmul_cpu)


def _results(infos, times, matmul, data_info, data_rates, settings,
             matmul_cpu=()) -> list[dict[str, Any]]:
    machine = machine_info(settings.device, settings.threads)
    peak = statistics.median(matmul)
    cpu_peak = statistics.median(matmul_cpu) if matmul_cpu else None
    common = {"precision": settings.precision, "compile": settings.compile,
              "retain_freed_memory": settings.retain_freed_memory,
              "omp_wait_policy": settings.omp_wait_policy or os.environ.get("OMP_WAIT_POLICY"),
              **machine}
    rows = []
    for name, info in infos.items():
        step_s = statistics.median(times[name])
        flops = info["flops_per_step"]
        rows.append({
            "kind": "step", "case": name, **common, **info,
            "ms_per_step": 1e3 * step_s,
            "ms_per_step_min": 1e3 * min(times[name]),
            "ms_per_step_max": 1e3 * max(times[name]),
            "repeats": len(times[name]),
            "sequences_per_s": info["batch_size"] / step_s,
            "audio_s_per_s": info["batch_size"] * info["window"] / SAMPLE_RATE / step_s,
            "peak_memory_mb": info["peak_memory_bytes"] / 2**20,
            "memory_kind": "cuda_max_allocated" if settings.device.startswith("cuda")
            else "rss_peak",
            "achieved_flops": flops / step_s,
            "matmul_flops": peak,
            "fraction_of_matmul": flops / step_s / peak,
            **_phase_figures(info, peak, cpu_peak),
        })
    if data_rates:
        rate = statistics.median(data_rates)
        consumed = max((r["sequences_per_s"] for r in rows), default=float("nan"))
        rows.append({"kind": "data", "case": "data pipeline", **common, **data_info,
                     "windows_per_s": rate, "repeats": len(data_rates),
                     "peak_memory_mb": data_info["peak_memory_bytes"] / 2**20,
                     "fastest_step_sequences_per_s": consumed,
                     "headroom": rate / consumed})
    rows.append({"kind": "matmul", "case": "matmul probe", **common,
                 "matmul_flops": peak, "matmul_flops_max": max(matmul),
                 "matmul_flops_per_cpu_s": cpu_peak,
                 "matmul_size": settings.matmul_size, "repeats": len(matmul)})
    return rows


def _phase_figures(info: dict[str, Any], matmul_flops: float,
                   matmul_flops_per_cpu_s: float | None = None) -> dict[str, Any]:
    """Per-phase milliseconds, share of the profiled step and fraction of the matmul rate, in
    wall time and (CPU, with the probe's rate per CPU second) in CPU time."""
    seconds = info.pop("phase_s", None)
    cpu_seconds = info.pop("phase_cpu_s", None)
    if seconds is None:
        return {}
    flops = info.get("phase_flops", {})

    def fractions(spent: dict[str, float], rate: float) -> dict[str, float]:
        return {name: flops.get(name, 0) / value / rate if value > 0 else 0.0
                for name, value in spent.items()}

    total = sum(seconds.values())
    out = {
        "phase_ms": {name: 1e3 * value for name, value in seconds.items()},
        "phase_share": {name: value / total for name, value in seconds.items()},
        "phase_fraction_of_matmul": fractions(seconds, matmul_flops),
        "profiled_ms_per_step": 1e3 * total,
    }
    if cpu_seconds is not None and matmul_flops_per_cpu_s:
        cpu_total = sum(cpu_seconds.values())
        out.update({
            "phase_cpu_ms": {name: 1e3 * value for name, value in cpu_seconds.items()},
            "phase_cpu_fraction_of_matmul": fractions(cpu_seconds, matmul_flops_per_cpu_s),
            "cpu_ms_per_step": 1e3 * cpu_total,
            "cpu_fraction_of_matmul": info["flops_per_step"] / cpu_total / matmul_flops_per_cpu_s,
        })
    return out


def _one_machine(rows: list[dict[str, Any]]) -> None:
    machines = {(r.get("machine"), r.get("cpu_model"), r.get("device")) for r in rows}
    if len(machines) > 1:
        raise ValueError(
            f"rows from {len(machines)} machines ({sorted(map(str, machines))}): a table "
            "compares cases of one run on one machine; tabulate each machine's rows apart")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown table (steps), followed by the data pipeline and the probe
    and, for profiled runs, a table of each case's phases. Rows must come from one machine."""
    _one_machine(rows)
    header = ("| case | objective | head | device | precision | batch | ms/step | seq/s "
              "| audio s/s | peak MB | params M | GFLOP/step | % of matmul |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        if r["kind"] != "step":
            continue
        lines.append(
            f"| {r['case']} | {r['objective']} | {r['head'] or '-'} | {r['device']} "
            f"| {r['precision']}{' compiled' if r['compile'] else ''} | {r['batch_size']} "
            f"| {r['ms_per_step']:.0f} | {r['sequences_per_s']:.2f} | {r['audio_s_per_s']:.1f} "
            f"| {r['peak_memory_mb']:.0f} | {r['parameters'] / 1e6:.2f} "
            f"| {r['flops_per_step'] / 1e9:.1f} | {100 * r['fraction_of_matmul']:.0f} |")
    for r in rows:
        if r["kind"] == "data":
            lines.append("")
            lines.append(f"Data pipeline: {r['windows_per_s']:.0f} windows/s "
                         f"({r['num_workers']} workers, window {r['window']}), "
                         f"{r['headroom']:.0f}x what the fastest step consumes.")
        elif r["kind"] == "matmul":
            lines.append("")
            load = r.get("load_average_1min")
            lines.append(f"Matmul probe ({r['matmul_size']}², precision {r['precision']}): "
                         f"{r['matmul_flops'] / 1e9:.0f} GFLOP/s median. {r['date']}"
                         + (f", commit {_short(r['commit'])}" if r.get("commit") else "")
                         + f", torch {r['torch']}"
                         + (f" (CUDA {r['cuda']})" if r.get("gpu") and r.get("cuda") else "")
                         + f", {r['threads']} threads, {r['machine']} "
                         f"({r['device']}, {r['cpu_count']} CPUs"
                         + (f" {r['cpu_model']}" if r.get("gpu") else "")
                         + (f", load average {load:.1f}" if load is not None else "")
                         + (f", OMP_WAIT_POLICY {r['omp_wait_policy'].lower()}"
                            if r.get("omp_wait_policy") else "")
                         + (", freed memory retained" if r.get("retain_freed_memory") else "")
                         + ").")
    lines += _phase_table(rows)
    return "\n".join(lines)


def _short(commit: str) -> str:
    return commit[:12] + ("+dirty" if commit.endswith("+dirty") else "")


def _phase_table(rows: list[dict[str, Any]]) -> list[str]:
    profiled = [r for r in rows if r["kind"] == "step" and "phase_ms" in r]
    if not profiled:
        return []
    with_cpu = all("phase_cpu_ms" in r for r in profiled)
    header = "| case | phase | ms | % of profiled step | % of matmul |"
    if with_cpu:
        header += " CPU ms | % of CPU time | % of matmul per CPU s |"
    lines = ["", header, "|" + "---|" * (header.count("|") - 1)]
    for r in profiled:
        cpu_total = sum(r["phase_cpu_ms"].values()) if with_cpu else 0.0
        for name, ms in r["phase_ms"].items():
            line = (f"| {r['case']} | {name} | {ms:.1f} | {100 * r['phase_share'][name]:.0f} "
                    f"| {100 * r['phase_fraction_of_matmul'][name]:.0f} |")
            if with_cpu:
                cpu = r["phase_cpu_ms"][name]
                line += (f" {cpu:.1f} | {100 * cpu / cpu_total:.0f} "
                         f"| {100 * r['phase_cpu_fraction_of_matmul'][name]:.0f} |")
            lines.append(line)
        if with_cpu:
            lines.append(f"| {r['case']} | whole step | {r['profiled_ms_per_step']:.1f} | 100 "
                         f"| {100 * r['fraction_of_matmul']:.0f} | {cpu_total:.1f} | 100 "
                         f"| {100 * r['cpu_fraction_of_matmul']:.0f} |")
    return lines
