"""Claims study: the papers' claims measured with several seeds and confidence intervals.

Each claim is a set of cells (a name and the training overrides that define it) trained with
the same budget and seeds, each run then evaluated by :mod:`ssl_speech.eval.commands.evaluate`
(converged phone probe on held-out utterances and held-out speakers, ABX within and across
speakers, speaker probe), beside the same architectures untrained (``untrained:<cell>``: one
optimizer step at learning rate 0, so the weights stay at their initialisation) and the
log-mel and MFCC baselines. The table gives, per cell, the mean over seeds ± the half-width of
a 95 % Student-t confidence interval, and the trained − untrained margin.

Runs and evaluations are kept under ``--out``; a rerun skips what is done, so a study cut
short resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# Two-sided 95 % Student-t quantiles by degrees of freedom (1..10); normal beyond.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228}
PREEMPTED_EXIT = 75
FIGURES = ("phone_acc", "phone_acc_heldout_speakers", "abx_within", "abx_across",
           "speaker_acc")


@dataclass
class Claim:
    """What a paper says, and the cells that test it."""

    says: str
    cells: dict[str, list[str]]
    steps: int
    common: list[str] = field(default_factory=list)
    steps_per_cell: dict[str, int] = field(default_factory=dict)
    # cells that differ only in the objective share one model architecture, so one untrained
    # model per seed (built from the first cell) serves them all
    shared_untrained: bool = False

    def untrained_cells(self) -> dict[str, list[str]]:
        if self.shared_untrained:
            first = next(iter(self.cells.values()))
            return {"untrained": first}
        return {f"untrained:{c}": o for c, o in self.cells.items()}

    def untrained_of(self, cell: str) -> str:
        return "untrained" if self.shared_untrained else f"untrained:{cell}"


_ACPC_PLAIN = ["objective.self_loop=false", "objective.skip_begin=0", "objective.skip_end=0"]
CLAIMS: dict[str, Claim] = {
    "acpc": Claim(
        says="ACPC (Chorowski et al. 2021) gives higher phone accuracy and lower ABX than CPC "
             "with the same encoder and context, and a cheaper step",
        cells={"acpc": ["objective=acpc"], "acpc_plain": ["objective=acpc", *_ACPC_PLAIN],
               "cpc": ["objective=cpc"]},
        steps=1000, shared_untrained=True),
    "rpc_batch": Claim(
        says="RPC (Tsai et al. 2021) trains stably and is less sensitive to the batch size "
             "than CPC",
        cells={f"{obj}_b{b}": [f"objective={obj}", f"data.batch_size={b}"]
               for obj in ("cpc", "rpc") for b in (4, 8, 16)},
        steps=800,
        steps_per_cell={f"{obj}_b{b}": 800 * 8 // b for obj in ("cpc", "rpc")
                        for b in (4, 8, 16)}),
    "trinet": Claim(
        says="TriNet's frozen branch (Cao et al. 2023) prevents the slow collapse of an "
             "EMA-only (data2vec-like) student",
        cells={"trinet": ["objective=trinet"],
               "ema_only": ["objective=trinet", "objective.class_weight=0"]},
        steps=2000, common=["optim=adamw_transformer"]),
    "mgf": Claim(
        says="MGF (Zhao et al. 2021): each time scale's loss adds to the representation",
        cells={"all": ["objective=mgf"],
               "no_utt": ["objective=mgf", "objective.utt_weight=0"],
               "no_phone": ["objective=mgf", "objective.phone_weight=0"],
               "no_frame": ["objective=mgf", "objective.frame_weight=0"]},
        steps=1000),
}


def t_interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its two-sided 95 % Student-t interval (NaN for n < 2)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, _T95.get(n - 1, 1.96) * sd / math.sqrt(n)


def _python() -> str:
    return sys.executable


def _train(run_dir: Path, overrides: list[str], threads: int, log: Path) -> float:
    """Train (or finish) one run; wall seconds per step of this invocation."""
    command = [_python(), "-m", "ssl_speech.train", *overrides, f"run_dir={run_dir}",
               f"hydra.run.dir={run_dir}/hydra", f"trainer.threads={threads}",
               "trainer.progress=false", "trainer.tensorboard=false", "probe.enabled=false"]
    start = time.monotonic()
    for _ in range(3):  # a preempted run (exit 75) resumes where it stopped
        with open(log, "a") as out:
            done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT,
                                  env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
        if done.returncode != PREEMPTED_EXIT:
            break
    if done.returncode != 0:
        raise RuntimeError(f"training failed (exit {done.returncode}): see {log}")
    return time.monotonic() - start


def _trained(run_dir: Path, steps: int) -> bool:
    return (run_dir / "checkpoints" / f"ckpt-{steps:08d}.pt").is_file()


def run_claim(name: str, out: Path, seeds: list[int], threads: int = 2,
              steps: int | None = None, eval_args: list[str] | None = None) -> list[dict]:
    """Train every cell of claim ``name`` for every seed (skipping finished runs), then
    evaluate all runs and the baselines in one pass; return one row per run."""
    from ssl_speech.eval.commands.evaluate import run as evaluate

    claim = CLAIMS[name]
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict] = {}
    timing_path = out / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    for seed in seeds:
        for cell, overrides in [*claim.cells.items(), *claim.untrained_cells().items()]:
            untrained = cell.startswith("untrained")
            n = steps or claim.steps_per_cell.get(cell, claim.steps)
            budget = (["trainer.max_steps=1", "optim.optimizer.lr=0.0"] if untrained
                      else [f"trainer.max_steps={n}"])
            run_dir = out / "runs" / f"{cell.replace(':', '-')}-seed{seed}"
            final = 1 if untrained else n
            if not _trained(run_dir, final):
                seconds = _train(run_dir, [*claim.common, *overrides, f"seed={seed}",
                                           "trainer.val_every=0",
                                           f"trainer.checkpoint_every={final}", *budget],
                                 threads, out / "train.log")
                if not untrained:
                    timing[run_dir.name] = seconds / final
                    timing_path.write_text(json.dumps(timing))
            runs[run_dir.name] = {"claim": name, "cell": cell, "seed": seed,
                                  "steps": 0 if untrained else n,
                                  "seconds_per_step": timing.get(run_dir.name)}
    figures = evaluate([*(str(out / "runs" / r) for r in runs), "--out", str(out / "eval"),
                        "--no-plots", *(eval_args or [])])
    baselines = {k: figures[k] for k in ("log_mel", "mfcc") if k in figures}
    rows = []
    for run_name, row in runs.items():
        key = next(k for k in figures if k == run_name or k.startswith(f"{run_name}@"))
        rows.append({**row, **figures[key], "baselines": baselines})
    with open(out / "runs.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return rows


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _fmt(mean: float, half: float, scale: float, digits: int = 1) -> str:
    if math.isnan(mean):
        return "–"
    if math.isnan(half):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {half * scale:.{digits}f}"


def table(rows: list[dict], claim: Claim) -> str:
    """Markdown: one line per cell, mean ± 95 % CI over seeds; margins over the untrained."""
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    head = ("| cell | seeds | steps | phone acc. % (test) | − untrained | phone acc. % "
            "(held-out speakers) | ABX within % | ABX across % | speaker acc. % | s/step |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for cell in cells:
        group = [r for r in rows if r["cell"] == cell]
        stats = {}
        for key in (*FIGURES, "seconds_per_step"):
            values = [r[key] for r in group if r.get(key) is not None]
            stats[key] = t_interval(values) if values else (math.nan, math.nan)
        margin = "–"
        if not cell.startswith("untrained"):
            pairs = {r["seed"]: r["phone_acc"] for r in group if r.get("phone_acc") is not None}
            base = {r["seed"]: r["phone_acc"] for r in rows
                    if r["cell"] == claim.untrained_of(cell) and r.get("phone_acc") is not None}
            diffs = [pairs[s] - base[s] for s in pairs if s in base]
            if diffs:
                margin = _fmt(*t_interval(diffs), 100)
        steps = group[0]["steps"]
        lines.append(
            f"| {cell} | {len(group)} | {steps} | {_fmt(*stats['phone_acc'], 100)} | {margin} "
            f"| {_fmt(*stats['phone_acc_heldout_speakers'], 100)} "
            f"| {_fmt(*stats['abx_within'], 1)} | {_fmt(*stats['abx_across'], 1)} "
            f"| {_fmt(*stats['speaker_acc'], 100)} "
            f"| {_fmt(*stats['seconds_per_step'], 1, 3)} |")
    baselines = {}
    for r in rows:
        for name, figs in r.get("baselines", {}).items():
            baselines.setdefault(name, figs)
    for name, figs in baselines.items():
        def pct(key, figs=figs):
            value = figs.get(key)
            return "–" if value is None else f"{value * 100:.1f}"

        def raw(key, figs=figs):
            value = figs.get(key)
            return "–" if value is None else f"{value:.1f}"

        lines.append(f"| {name} | – | – | {pct('phone_acc')} | – "
                     f"| {pct('phone_acc_heldout_speakers')} | {raw('abx_within')} "
                     f"| {raw('abx_across')} | {pct('speaker_acc')} | – |")
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="claims", description=__doc__.splitlines()[0])
    parser.add_argument("claim", choices=sorted(CLAIMS))
    parser.add_argument("--out", type=Path, default=None, help="default: runs/claims/<claim>")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="override the claim's budget")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-args", nargs=argparse.REMAINDER, default=[],
                        help="passed to the evaluate command (e.g. --max-train-utterances 200)")
    args = parser.parse_args(argv)
    out = args.out or Path("runs") / "claims" / args.claim
    rows = run_claim(args.claim, out, args.seeds, args.threads, args.steps, args.eval_args)
    text = f"{CLAIMS[args.claim].says}\n\n{table(rows, CLAIMS[args.claim])}"
    (out / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
