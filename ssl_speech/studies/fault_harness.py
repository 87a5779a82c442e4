"""The fault campaign's harness: a small training run started, watched, resumed and compared
bit for bit with an uninterrupted one (:mod:`ssl_speech.studies.fault_campaign` drives it)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ssl_speech.runs.checkpoint import latest_valid_checkpoint, list_checkpoints
from ssl_speech.runs.metrics_log import read_metrics
from ssl_speech.studies.fault_injection import PLAN_ENV, SITECUSTOMIZE

MAX_STEPS = 12
# A small model on a small copy of the embedded corpus: a trial takes a few seconds.
TINY = [
    "objective=cpc", "objective.num_steps=4", "objective.num_negatives=16",
    "encoder.dim=32", "encoder.hidden=32", "encoder.n_mels=40", "context.dim=32",
    "data=librispeech", "data.window=5120", "data.batch_size=2", "data.sampler=uniform",
    "data.dev_split=null", "data.in_memory=false", "data.num_workers=0",
    f"trainer.max_steps={MAX_STEPS}", "trainer.log_every=1", "trainer.val_every=0",
    "trainer.checkpoint_every=2", "trainer.keep_last=3", "trainer.progress=false",
    "trainer.tensorboard=false", "trainer.diagnostics_every=0", "trainer.threads=1",
    "optim.warmup_steps=2", "probe.enabled=false",
]
PREEMPTED_EXIT = 75


@dataclass
class Trial:
    kind: str
    seed: int
    outcome: str = "failed"
    detail: str = ""
    steps_lost: int = 0
    files_lost: int = 0
    exits: list[int] = field(default_factory=list)


@dataclass
class Campaign:
    """Where the campaign works, and how it starts a run."""

    workdir: Path
    corpus: Path
    python: str = sys.executable
    timeout_s: float = 300.0
    reference_seconds: float = 10.0  # wall time of an uninterrupted run (measured)

    def command(self, run_dir: Path, nproc: int = 1, extra: list[str] | None = None) -> list[str]:
        overrides = [*TINY, f"data.root={self.corpus}", f"run_dir={run_dir}",
                     f"hydra.run.dir={run_dir}/hydra", *(extra or [])]
        if nproc == 1:
            return [self.python, "-m", "ssl_speech.train", *overrides]
        torchrun = [self.python, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={nproc}", "--max-restarts=1", "--monitor-interval=0.5"]
        return [*torchrun, "-m", "ssl_speech.train", *overrides]

    def environment(self, plan: dict | None) -> dict[str, str]:
        env = dict(os.environ, OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
        env.pop(PLAN_ENV, None)
        if plan is not None:
            hook_dir = self.workdir / "injector"
            hook_dir.mkdir(parents=True, exist_ok=True)
            (hook_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
            env["PYTHONPATH"] = os.pathsep.join(
                [str(hook_dir), *filter(None, [env.get("PYTHONPATH")])])
            env[PLAN_ENV] = json.dumps(plan)
        return env

    def start(self, run_dir: Path, plan: dict | None = None, nproc: int = 1,
              extra: list[str] | None = None) -> subprocess.Popen:
        log = open(run_dir.parent / f"{run_dir.name}.log", "a")  # noqa: SIM115 (closed by caller)
        return subprocess.Popen(self.command(run_dir, nproc, extra), env=self.environment(plan),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def run(self, run_dir: Path, plan: dict | None = None, nproc: int = 1,
            extra: list[str] | None = None) -> int:
        proc = self.start(run_dir, plan, nproc, extra)
        return _wait(proc, self.timeout_s)


def _wait(proc: subprocess.Popen, timeout_s: float) -> int:
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return -999


def make_corpus(out: Path, source: Path, utterances: int = 24) -> Path:
    """A LibriSpeech-layout copy of ``utterances`` files of ``source`` (writable: the data
    faults delete and rewrite files in it)."""
    files = sorted(source.rglob("*.flac"))[:utterances]
    if not files:
        raise FileNotFoundError(f"no .flac files under {source}")
    for path in files:
        dest = out / path.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest)
    return out


def _train_losses(run_dir: Path) -> dict[int, float]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    rows = read_metrics(path)
    return {int(r["step"]): float(r["loss"]) for r in rows
            if "loss" in r and r.get("split", "train") == "train"}


def _final_state(run_dir: Path) -> dict | None:
    found = latest_valid_checkpoint(run_dir)
    if found is None:
        return None
    state = torch.load(found, map_location="cpu", weights_only=True)
    return state if int(state.get("step", -1)) == MAX_STEPS else None


def _tensors_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_tensors_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def compare_runs(reference: Path, trial: Path) -> str | None:
    """``None`` when ``trial`` ended in the reference's state, else what differs."""
    ref, got = _final_state(reference), _final_state(trial)
    if got is None:
        return f"no valid final checkpoint (step {MAX_STEPS}) in {trial}"
    for key in ("model", "objective", "optimizer"):
        if not _tensors_equal(ref[key], got[key]):
            return f"{key} state differs"
    ref_losses, losses = _train_losses(reference), _train_losses(trial)
    if ref_losses != losses:
        steps = sorted(s for s in set(ref_losses) | set(losses)
                       if ref_losses.get(s) != losses.get(s))
        return f"loss curve differs at steps {steps[:5]}"
    return None


def _corrupt_checkpoints(run_dir: Path) -> int:
    """Checkpoints whose hash sidecar says complete but that no longer verify."""
    from ssl_speech.runs.checkpoint import verify_checkpoint

    lost = 0
    for path in list_checkpoints(run_dir):
        sidecar = path.with_name(path.name + ".sha256")
        if sidecar.is_file() and verify_checkpoint(path) is not None:
            lost += 1
    return lost


def _last_logged_step(run_dir: Path) -> int:
    losses = _train_losses(run_dir)
    return max(losses) if losses else 0


def _poll_until_step(run_dir: Path, proc: subprocess.Popen, step: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if _last_logged_step(run_dir) >= step:
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return False


def _log_text(run_dir: Path) -> str:
    path = run_dir.parent / f"{run_dir.name}.log"
    return path.read_text(errors="replace") if path.is_file() else ""


def _resume_until_done(c: Campaign, run_dir: Path, trial: Trial, nproc: int = 1,
                       extra: list[str] | None = None) -> None:
    for _ in range(3):
        if _final_state(run_dir) is not None:
            return
        trial.exits.append(c.run(run_dir, nproc=nproc, extra=extra))


def _finish(c: Campaign, reference: Path, run_dir: Path, trial: Trial, fault_step: int,
            nproc: int = 1) -> Trial:
    """Resume, then grade against the reference."""
    trial.files_lost = _corrupt_checkpoints(run_dir)
    found = latest_valid_checkpoint(run_dir)
    resumed_from = 0
    if found is not None:
        resumed_from = int(torch.load(found, map_location="cpu", weights_only=True)["step"])
    trial.steps_lost = max(0, fault_step - resumed_from)
    _resume_until_done(c, run_dir, trial, nproc)
    diff = compare_runs(reference, run_dir)
    trial.outcome = "identical" if diff is None else "failed"
    trial.detail = diff or ""
    return trial
