"""Fault campaign: train a small model many times, each time with one fault at a random
moment, let the same command resume, and compare with an uninterrupted run.

Every trial ends in one of three outcomes:

- ``identical``: the resumed run's final parameters, optimizer state and loss curve equal
  the uninterrupted reference's bit for bit;
- ``named``: the run finished (or stopped) with a message that names the fault (a skipped
  file by name, a full disk), and differs from the reference only where the fault says;
- ``failed``: anything else — a run that could not finish, or that differs silently.

Fault kinds (see :data:`KINDS`): SIGKILL at a random step, inside a checkpoint write at a
random byte, just before the fsync or the rename of a write, inside a metrics-log append;
SIGTERM and SIGUSR1 at a random moment of a random step, and twice, and SIGTERM at any moment
of the process's life; the disk filling up during a checkpoint or a
log write; an audio file deleted or truncated while training reads it; non-finite samples in
a file; one DDP rank killed, or raising, under ``torchrun --max-restarts=1``. In-process faults
go through :mod:`ssl_speech.studies.fault_injection`.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
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


# --- fault kinds -------------------------------------------------------------------------

def _signal_at_step(c: Campaign, ref: Path, run_dir: Path, rng: random.Random, trial: Trial,
                    sig: int, count: int = 1) -> Trial:
    """``sig`` sent ``count`` times from inside the process, starting at a random moment of a
    random step (the checkpoint written after that step included)."""
    step = rng.randint(1, MAX_STEPS)
    plan = {"kind": "signal", "signal": int(sig), "step": step, "count": count,
            "delay": rng.uniform(0.0, 0.2), "gap": rng.uniform(0.0, 0.2)}
    code = c.run(run_dir, plan=plan)
    trial.exits.append(code)
    if sig != signal.SIGKILL and code not in (0, PREEMPTED_EXIT):
        trial.detail = f"exit {code} after signal {signal.Signals(sig).name}"
        return trial
    return _finish(c, ref, run_dir, trial, max(step, _last_logged_step(run_dir)))


def sigterm_anytime(c, ref, run_dir, rng, trial):
    """SIGTERM from outside at a uniformly random moment of the process's life (start-up,
    corpus scan, training, final checkpoint, exit)."""
    proc = c.start(run_dir)
    time.sleep(rng.uniform(0.0, c.reference_seconds))
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    code = _wait(proc, c.timeout_s)
    trial.exits.append(code)
    started = _last_logged_step(run_dir) > 0 or bool(list_checkpoints(run_dir))
    if code not in (0, PREEMPTED_EXIT) and started:
        trial.detail = f"exit {code} after SIGTERM during training"
        return trial
    _finish(c, ref, run_dir, trial, _last_logged_step(run_dir))
    if code not in (0, PREEMPTED_EXIT) and trial.outcome == "identical":
        trial.detail = f"exit {code}: SIGTERM before training began (nothing to lose)"
    return trial


def sigkill_step(c, ref, run_dir, rng, trial):
    return _signal_at_step(c, ref, run_dir, rng, trial, signal.SIGKILL)


def sigterm_step(c, ref, run_dir, rng, trial):
    return _signal_at_step(c, ref, run_dir, rng, trial, signal.SIGTERM)


def sigusr1_twice(c, ref, run_dir, rng, trial):
    return _signal_at_step(c, ref, run_dir, rng, trial, signal.SIGUSR1, count=2)


def _planned(c: Campaign, ref: Path, run_dir: Path, trial: Trial, plan: dict) -> Trial:
    trial.exits.append(c.run(run_dir, plan=plan))
    return _finish(c, ref, run_dir, trial, _last_logged_step(run_dir))


def kill_in_checkpoint_write(c, ref, run_dir, rng, trial):
    # checkpoint files are ~ a few MB; kill anywhere in the first few of them
    plan = {"kind": "kill_in_write", "target": "checkpoint", "nth": rng.randint(1, 8),
            "after_bytes": rng.randint(0, 600_000)}
    return _planned(c, ref, run_dir, trial, plan)


def kill_before_fsync_or_rename(c, ref, run_dir, rng, trial):
    plan = {"kind": "kill_at", "point": rng.choice(["fsync", "replace"]),
            "nth": rng.randint(1, 10)}
    return _planned(c, ref, run_dir, trial, plan)


def kill_in_metrics_append(c, ref, run_dir, rng, trial):
    plan = {"kind": "kill_in_write", "target": "metrics", "nth": rng.randint(1, MAX_STEPS),
            "after_bytes": rng.randint(0, 200)}
    return _planned(c, ref, run_dir, trial, plan)


def _disk_full(c, ref, run_dir, rng, trial, target: str, budget: int) -> Trial:
    plan = {"kind": "disk_full", "target": target, "after_bytes": budget}
    code = c.run(run_dir, plan=plan)
    trial.exits.append(code)
    text = _log_text(run_dir)
    if code == 0:
        # the fault never landed (budget above what the run wrote): plain resume check
        return _finish(c, ref, run_dir, trial, _last_logged_step(run_dir))
    if "No space left on device" not in text and "ENOSPC" not in text:
        trial.detail = f"exit {code} without a message naming the full disk"
        return trial
    _finish(c, ref, run_dir, trial, _last_logged_step(run_dir))
    if trial.outcome == "identical":
        return trial
    trial.outcome, trial.detail = "failed", trial.detail or "did not recover"
    return trial


def disk_full_checkpoint(c, ref, run_dir, rng, trial):
    return _disk_full(c, ref, run_dir, rng, trial, "checkpoint", rng.randint(0, 3_000_000))


def disk_full_log(c, ref, run_dir, rng, trial):
    return _disk_full(c, ref, run_dir, rng, trial, "metrics", rng.randint(0, 3000))


def _data_fault(c: Campaign, ref: Path, run_dir: Path, rng: random.Random, trial: Trial,
                damage: Callable[[Path], None], on_error: str) -> Trial:
    """Damage one file of a private copy of the corpus while the run trains."""
    corpus = run_dir.parent / f"{run_dir.name}-corpus"
    shutil.copytree(c.corpus, corpus)
    victim = rng.choice(sorted(corpus.rglob("*.flac")))
    local = Campaign(c.workdir, corpus, c.python, c.timeout_s)
    proc = local.start(run_dir, extra=[f"data.on_error={on_error}"])
    if _poll_until_step(run_dir, proc, rng.randint(1, MAX_STEPS // 2), c.timeout_s):
        damage(victim)
    code = _wait(proc, c.timeout_s)
    trial.exits.append(code)
    text = _log_text(run_dir)
    named = victim.name in text or victim.stem in text
    if on_error == "raise":
        ok = code != 0 and named
    else:
        ok = code == 0 and named and _final_state(run_dir) is not None
        if code == 0 and not named:
            # the damaged file may simply not have been read again before the end
            ok = compare_runs(ref, run_dir) is None
            trial.outcome = "identical" if ok else "failed"
            trial.detail = "" if ok else "finished, differs, and named nothing"
            return trial
    trial.outcome = "named" if ok else "failed"
    trial.detail = f"{victim.name}: exit {code}, named={named}"
    return trial


def _delete(path: Path) -> None:
    path.unlink()


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: max(1, len(data) // 10)])


def file_deleted(c, ref, run_dir, rng, trial):
    return _data_fault(c, ref, run_dir, rng, trial, _delete, "skip")


def file_truncated(c, ref, run_dir, rng, trial):
    return _data_fault(c, ref, run_dir, rng, trial, _truncate, rng.choice(["skip", "raise"]))


def nonfinite_samples(c, ref, run_dir, rng, trial):
    def poison(path: Path) -> None:
        wav, rate = sf.read(path, dtype="float32")
        wav = np.asarray(wav, dtype=np.float32)
        start = rng.randint(0, max(0, len(wav) - 100))
        wav[start:start + 100] = rng.choice([np.nan, np.inf])
        path.unlink()
        sf.write(path.with_suffix(".flac"), wav, rate, subtype="FLOAT", format="WAV")

    return _data_fault(c, ref, run_dir, rng, trial, poison, "skip")


def _rank_fault(c: Campaign, ref2: Path, run_dir: Path, rng: random.Random, trial: Trial,
                action: str) -> Trial:
    plan = {"kind": "rank_fault", "rank": 1, "step": rng.randint(2, MAX_STEPS - 1),
            "action": action}
    start = time.monotonic()
    trial.exits.append(c.run(run_dir, plan=plan, nproc=2))
    elapsed = time.monotonic() - start
    fault_step = int(plan["step"]) - 1
    _finish(c, ref2, run_dir, trial, fault_step, nproc=2)
    trial.detail = (trial.detail + f" ({elapsed:.0f} s)").strip()
    return trial


def rank_killed(c, ref, run_dir, rng, trial):
    return _rank_fault(c, ref, run_dir, rng, trial, "kill")


def rank_raises(c, ref, run_dir, rng, trial):
    return _rank_fault(c, ref, run_dir, rng, trial, "raise")


KINDS: dict[str, Callable] = {
    "sigkill": sigkill_step,
    "kill_in_checkpoint_write": kill_in_checkpoint_write,
    "kill_before_fsync_or_rename": kill_before_fsync_or_rename,
    "kill_in_metrics_append": kill_in_metrics_append,
    "sigterm": sigterm_step,
    "sigterm_anytime": sigterm_anytime,
    "sigusr1_twice": sigusr1_twice,
    "disk_full_checkpoint": disk_full_checkpoint,
    "disk_full_log": disk_full_log,
    "file_deleted": file_deleted,
    "file_truncated": file_truncated,
    "nonfinite_samples": nonfinite_samples,
    "rank_killed": rank_killed,
    "rank_raises": rank_raises,
}
DDP_KINDS = {"rank_killed", "rank_raises"}


def run_campaign(workdir: Path, corpus_source: Path, kinds: list[str], trials: int,
                 seed: int = 0, progress: Callable[[Trial], None] | None = None) -> list[Trial]:
    """Run ``trials`` trials of each kind; return them all."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown fault kinds {unknown}; choose from {sorted(KINDS)}")
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = workdir / "corpus"
    if not corpus.is_dir():
        make_corpus(corpus, corpus_source)
    c = Campaign(workdir, corpus)
    refs: dict[int, Path] = {}
    for nproc in sorted({2 if k in DDP_KINDS else 1 for k in kinds}):
        ref = workdir / f"reference-{nproc}"
        if _final_state(ref) is None or nproc == 1:
            shutil.rmtree(ref, ignore_errors=True)
            start = time.monotonic()
            code = c.run(ref, nproc=nproc)
            if nproc == 1:
                c.reference_seconds = time.monotonic() - start
            if code != 0 or _final_state(ref) is None:
                raise RuntimeError(f"the uninterrupted reference run failed (exit {code}); "
                                   f"see {ref.parent / (ref.name + '.log')}")
        refs[nproc] = ref
    rng = random.Random(seed)
    results = []
    for kind in kinds:
        for i in range(trials):
            trial = Trial(kind, seed=rng.randrange(2**31))
            run_dir = workdir / "trials" / f"{kind}-{i:03d}"
            shutil.rmtree(run_dir, ignore_errors=True)
            shutil.rmtree(run_dir.parent / f"{run_dir.name}-corpus", ignore_errors=True)
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            ref = refs[2 if kind in DDP_KINDS else 1]
            try:
                KINDS[kind](c, ref, run_dir, random.Random(trial.seed), trial)
            except Exception as exc:  # a campaign reports, it does not stop
                trial.outcome, trial.detail = "failed", f"{type(exc).__name__}: {exc}"
            results.append(trial)
            if progress is not None:
                progress(trial)
    return results


def summarise(trials: list[Trial]) -> list[dict]:
    rows = []
    for kind in dict.fromkeys(t.kind for t in trials):
        group = [t for t in trials if t.kind == kind]
        lost = [t.steps_lost for t in group]
        rows.append({
            "kind": kind, "trials": len(group),
            "identical": sum(t.outcome == "identical" for t in group),
            "named": sum(t.outcome == "named" for t in group),
            "failed": sum(t.outcome == "failed" for t in group),
            "steps_lost_mean": round(float(np.mean(lost)), 2), "steps_lost_max": max(lost),
            "files_lost": sum(t.files_lost for t in group),
        })
    return rows


def markdown_table(rows: list[dict]) -> str:
    head = ("| fault | trials | identical | named | failed | steps lost (mean / max) "
            "| files lost |\n|---|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| {r['kind']} | {r['trials']} | {r['identical']} | {r['named']} | {r['failed']} "
        f"| {r['steps_lost_mean']} / {r['steps_lost_max']} | {r['files_lost']} |\n"
        for r in rows)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="fault-campaign",
        description="Inject one fault per trial into a small training run, resume it, and "
                    "compare with an uninterrupted run.")
    parser.add_argument("--out", type=Path, default=Path("runs/fault_campaign"),
                        help="working directory (trials, references, results)")
    parser.add_argument("--trials", type=int, default=20, help="trials per fault kind")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus", type=Path, default=None,
                        help="a LibriSpeech-layout tree to copy files from (default: the "
                             "embedded corpus)")
    args = parser.parse_args(argv)
    source = args.corpus
    if source is None:
        from ssl_speech.data.synthetic import ensure_corpus

        source = ensure_corpus(progress=False)

    def show(t: Trial) -> None:
        print(f"{t.kind:28s} {t.outcome:9s} lost {t.steps_lost} step(s) "
              f"exits {t.exits} {t.detail}", file=sys.stderr, flush=True)

    trials = run_campaign(args.out, Path(source), args.kinds, args.trials, args.seed, show)
    rows = summarise(trials)
    table = markdown_table(rows)
    (args.out / "table.md").write_text(table)
    with open(args.out / "trials.jsonl", "w") as f:
        for t in trials:
            f.write(json.dumps(t.__dict__) + "\n")
    print(table)
    print(json.dumps({"fault_campaign": rows}))
    return 0 if all(r["failed"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
