"""Compare training runs on one budget of audio seconds: train, probe, tabulate.

Each run of a preset (:mod:`ssl_speech.studies.compare_preset`) trains on the same number of
audio seconds, so runs with different batch sizes take different numbers of steps; each is then
probed (:func:`ssl_speech.eval.probing.probe`: the linear phone probe to convergence, the
speaker probe) and summarised from its ``metrics.jsonl``
(:mod:`ssl_speech.studies.compare_summary`). The result is ``table.md``, ``curves.png`` and
``summary.json`` in the output directory, with one training run directory per run beside them.

A run whose directory already holds a ``summary.json`` made with the same overrides and probe
settings is not trained again (delete the directory to redo it); an interrupted run resumes
from its last checkpoint; a directory made with other overrides is an error, never reused. Runs
are trained by :func:`ssl_speech.train.api.train` on configs composed with Hydra's compose
API, exactly as ``python -m ssl_speech.train <overrides>`` would build them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from ssl_speech.data.audio import SAMPLE_RATE
from ssl_speech.data.corpus import Utterance
from ssl_speech.eval.features import baseline_features_of, model_features
from ssl_speech.eval.probing import Features, ProbeSplit
from ssl_speech.studies.compare_preset import (
    BASELINES,
    Preset,
    ProbeSettings,
    RunSpec,
    load_preset,
    shipped_presets,
)
from ssl_speech.studies.compare_summary import (
    column_value,
    markdown_table,
    plot_curves,
    summarise_run,
)
from ssl_speech.train import build

SUMMARY_FILE = "summary.json"
OVERRIDES_FILE = "compare_overrides.json"

# ------------------------------------------------------------------------------- configs
def compose_run(overrides: Sequence[str]) -> tuple[DictConfig, dict[str, str]]:
    """The training config for ``overrides`` and the chosen option of each config group."""
    from ssl_speech.config import compose_with_choices

    return compose_with_choices(overrides)


def seconds_per_step(cfg: DictConfig) -> float:
    """Audio seconds one optimizer step trains on (one process)."""
    return (int(cfg.data.batch_size) * int(cfg.trainer.accumulate) * int(cfg.data.window)
            / SAMPLE_RATE)


def plan_run(preset: Preset, spec: RunSpec, out_dir: Path) -> tuple[list[str], int, float]:
    """The full overrides of one run, its steps and its seconds per step."""
    base = [*preset.base_overrides, *spec.overrides]
    cfg, _ = compose_run([*base, f"run_dir={out_dir / spec.name}", f"run_name={spec.name}"])
    per_step = seconds_per_step(cfg)
    steps = max(1, round(preset.budget_seconds / per_step))
    derived = [f"trainer.max_steps={steps}"]
    derived += [f"{key}={round(frac * steps)}" for key, frac in preset.step_fractions.items()]
    full = [*base, *derived, f"run_dir={out_dir / spec.name}", f"run_name={spec.name}",
            "probe.enabled=false"]
    return full, steps, per_step


# ------------------------------------------------------------------------------- probes
def probe_split(cfg: DictConfig, settings: ProbeSettings) -> tuple[ProbeSplit, list[Utterance]]:
    """The probes' utterances and labels, drawn as the end-of-training probe draws them."""
    from ssl_speech.data.source import load_split_corpus, read_labels, resolve_data_source
    from ssl_speech.eval.quick_probe import quick_split

    source = resolve_data_source(cfg.data, progress=False)
    alignments = read_labels(source)
    if settings.phone and alignments is None:
        raise ValueError("the phone probe needs phone alignments (data.alignments); set "
                         "probe.phone: false in the preset for a corpus without them")
    train_corpus = load_split_corpus(source, source.train_split, "skip", 0)
    test_corpus = load_split_corpus(source, source.dev_split or source.train_split, "skip", 0)
    return quick_split(train_corpus, test_corpus, alignments if settings.phone else None,
                       settings.train_utterances, settings.test_utterances, int(cfg.seed))


def probe_features(features: Features, split: ProbeSplit, settings: ProbeSettings, seed: int,
                   device: torch.device | str = "cpu") -> dict[str, float]:
    """``probe_phone`` (with ``probe_converged``) and ``probe_speaker`` of one feature set."""
    from ssl_speech.eval.probing import probe

    outcome = probe(
        {"features": features}, split, settings.phone_protocol(seed),
        speaker_protocol=settings.speaker_protocol(seed) if settings.speaker else None,
        phone=settings.phone, device=device, in_memory=True,
    )["features"]
    out: dict[str, float] = {}
    if settings.phone:
        out["probe_phone"] = outcome.phone["dev"].accuracy
        out["probe_converged"] = float(outcome.phone["dev"].converged)
    if outcome.speaker is not None:
        out["probe_speaker"] = outcome.speaker.accuracy
    return out


def probe_model(model: torch.nn.Module, split: ProbeSplit, utterances: list[Utterance],
                settings: ProbeSettings, seed: int) -> dict[str, float]:
    """Probe a model's frozen features (layer ``settings.layer``)."""
    device = next(model.parameters()).device
    return probe_features(model_features(model, utterances, settings.layer), split, settings,
                          seed, device)


def probe_baseline(kind: str, cfg: DictConfig, split: ProbeSplit, utterances: list[Utterance],
                   settings: ProbeSettings) -> dict[str, float]:
    """Probe log-mel or MFCC features, or the run's architecture at initialisation."""
    from ssl_speech.train.rng import seed_everything

    seed = int(cfg.seed)
    if kind in ("log-mel", "mfcc"):
        features = baseline_features_of(utterances, kind.replace("-", "_"))
        return probe_features(features, split, settings, seed)
    if kind == "untrained":
        seed_everything(seed)
        return probe_model(build.build_model(cfg), split, utterances, settings, seed)
    raise ValueError(f"unknown baseline {kind!r}; use one of {BASELINES}")


# ------------------------------------------------------------------------------- driver
def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _log(message: str) -> None:
    print(f"[compare] {message}", file=sys.stderr, flush=True)


def train_and_probe(preset: Preset, spec: RunSpec, out_dir: Path) -> dict[str, Any]:
    """Train one run (or reuse its finished summary), probe it, and return its result row."""
    from ssl_speech.train.api import train as run

    overrides, steps, per_step = plan_run(preset, spec, out_dir)
    run_dir = out_dir / spec.name
    cached = run_dir / SUMMARY_FILE
    if cached.is_file():
        row = json.loads(cached.read_text())
        if row.get("overrides") == overrides and row.get("probe") == asdict(preset.probe):
            _log(f"{spec.name}: finished before, reusing {cached}")
            return row
    # A run directory belongs to one set of overrides: never resume or reuse another's.
    owner = run_dir / OVERRIDES_FILE
    if owner.is_file() and json.loads(owner.read_text()) != overrides:
        raise ValueError(f"{run_dir} holds a run with other overrides ({owner}); delete the "
                         "directory or choose another output directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    owner.write_text(json.dumps(overrides) + "\n")
    cfg, choices = compose_run(overrides)
    _log(f"{spec.name}: {steps} steps of {per_step:g} audio seconds "
         f"({' '.join(spec.overrides)})")
    start = time.perf_counter()
    result = run(cfg)
    wall = time.perf_counter() - start
    row: dict[str, Any] = {
        "run": spec.name, "run_dir": str(run_dir), "overrides": overrides,
        "steps": int(result.step), "seconds_per_step": per_step,
        "audio_seconds": int(result.step) * per_step, "wall_seconds": wall,
        "choices": choices, "config": build.plain_config(cfg),
        "probe": asdict(preset.probe),
    }
    row.update(summarise_run(run_dir, preset.tail_fraction))
    if preset.probe.phone or preset.probe.speaker:
        _log(f"{spec.name}: probing")
        split, utterances = probe_split(cfg, preset.probe)
        row.update(probe_model(result.model, split, utterances, preset.probe, int(cfg.seed)))
    cached.write_text(json.dumps(_jsonable(row), indent=1) + "\n")
    return row


def baseline_rows(preset: Preset, spec: RunSpec, out_dir: Path) -> list[dict[str, Any]]:
    """Probe the preset's baselines on the data (and architecture) of ``spec``, cached."""
    overrides = plan_run(preset, spec, out_dir)[0]
    cfg = None
    rows = []
    for kind in preset.baselines:
        cached = out_dir / f"baseline-{kind}.json"
        key = {"overrides": overrides, "probe": asdict(preset.probe)}
        if cached.is_file() and json.loads(cached.read_text()).get("key") == key:
            rows.append(json.loads(cached.read_text())["row"])
            continue
        if cfg is None:
            cfg, _ = compose_run(overrides)
            split, utterances = probe_split(cfg, preset.probe)
        _log(f"probing the {kind} baseline")
        row = {"run": kind, **probe_baseline(kind, cfg, split, utterances, preset.probe)}
        cached.write_text(json.dumps({"key": key, "row": _jsonable(row)}, indent=1) + "\n")
        rows.append(row)
    return rows


def run_preset(
    preset: Preset, out_dir: str | Path, max_runs: int | None = None,
    budget_seconds: float | None = None, extra_overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Train, probe and tabulate the preset's runs one after another.

    Args:
        preset: from :func:`load_preset`.
        out_dir: where the run directories, ``table.md``, ``curves.png`` and ``summary.json``
            go.
        max_runs: only the first ``max_runs`` runs (all by default).
        budget_seconds: overrides the preset's audio seconds per run.
        extra_overrides: appended to every run's base overrides (e.g. ``trainer.threads=1``).

    Returns:
        ``{"table": path, "plot": path, "summary": path, "rows": [...]}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if budget_seconds is not None and not budget_seconds > 0:
        raise ValueError(f"budget_seconds must be > 0, got {budget_seconds}")
    preset = replace(
        preset, base_overrides=[*preset.base_overrides, *extra_overrides],
        budget_seconds=preset.budget_seconds if budget_seconds is None else float(budget_seconds),
    )
    if max_runs is not None and max_runs < 1:
        raise ValueError(f"max_runs must be >= 1, got {max_runs}")
    specs = preset.runs[:max_runs] if max_runs else preset.runs
    rows = [train_and_probe(preset, spec, out_dir) for spec in specs]
    if preset.baselines and (preset.probe.phone or preset.probe.speaker):
        rows += baseline_rows(preset, specs[0], out_dir)
    table = markdown_table(rows, preset.columns)
    header = f"# {preset.name}: {preset.budget_seconds:g} audio seconds per run\n\n"
    if preset.description:
        header += preset.description + "\n\n"
    table_path = out_dir / "table.md"
    table_path.write_text(header + table)
    try:
        plot_path: Path | None = plot_curves(rows, preset.plots, out_dir / "curves.png")
    except ImportError:  # the table and summary stand without the figure
        plot_path = None
        print("curves.png not drawn: plots need matplotlib (pip install 'ssl_speech[plots]')",
              file=sys.stderr)
    summary_path = out_dir / SUMMARY_FILE
    summary_path.write_text(json.dumps(_jsonable({"preset": preset.name,
                                                  "budget_seconds": preset.budget_seconds,
                                                  "rows": rows}), indent=1) + "\n")
    print(header + table, file=sys.stderr)
    return {"table": str(table_path), "plot": str(plot_path) if plot_path else None,
            "summary": str(summary_path), "rows": rows}


# ------------------------------------------------------------------------------- command
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="compare", description="Train a preset's runs on the same audio seconds, probe "
        "them and tabulate them. Writes OUT/table.md, OUT/curves.png, OUT/summary.json and "
        "one run directory per run; ends with one JSON line of the table's rows.")
    parser.add_argument("preset", help=f"a shipped preset ({', '.join(shipped_presets())}) "
                                       "or a YAML file")
    parser.add_argument("--budget-seconds", type=float, default=None,
                        help="audio seconds per run (default: the preset's budget_seconds)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: runs/compare/<preset>)")
    parser.add_argument("--max-runs", type=int, default=None,
                        help="run only the preset's first N runs")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a Hydra override for every run, after the preset's base overrides "
                             "(repeatable), e.g. trainer.threads=1")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error")
    return parser.parse_args(argv)


def _clean(value: Any) -> Any:
    # JSON has no NaN or infinity: such a figure is null
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    return value


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """The command's work: train, probe, tabulate; returns (and prints) its JSON figures."""
    args = parse_args(argv)
    preset = load_preset(args.preset)
    out = args.out or Path("runs") / "compare" / preset.name
    result = run_preset(preset, out, max_runs=args.max_runs, budget_seconds=args.budget_seconds,
                        extra_overrides=args.override)
    figures = {
        "table": result["table"], "plot": result["plot"], "summary": result["summary"],
        "rows": [{header: _clean(column_value(row, spec)) for header, spec in preset.columns}
                 for row in result["rows"]],
    }
    print(json.dumps(figures))
    return figures


def main(argv: list[str] | None = None) -> int:
    """The ``compare`` command: a bad preset, override or corpus ends in ``error: ...``."""
    from ssl_speech.eval.cli import command

    return command(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
