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
import random
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ssl_speech.studies.fault_harness import Campaign, Trial, _final_state, make_corpus
from ssl_speech.studies.fault_kinds import DDP_KINDS, KINDS


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
