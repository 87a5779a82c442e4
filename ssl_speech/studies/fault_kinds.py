"""The fault kinds of the campaign: each injects one fault into a trial run at a random
moment, lets the same command resume, and grades the outcome (see
:mod:`ssl_speech.studies.fault_campaign`)."""

from __future__ import annotations

import random
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from ssl_speech.runs.checkpoint import list_checkpoints
from ssl_speech.studies.fault_harness import (
    MAX_STEPS,
    PREEMPTED_EXIT,
    Campaign,
    Trial,
    _final_state,
    _finish,
    _last_logged_step,
    _log_text,
    _poll_until_step,
    _wait,
    compare_runs,
)


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
