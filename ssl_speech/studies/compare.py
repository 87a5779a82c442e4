"""Compare training runs on one budget of audio seconds: a table and loss curves.

A *preset* is a YAML file in ``configs/compare/`` (or any path) that names a list of runs, each
a list of Hydra overrides of the training config. Every run trains on the same number of audio
seconds, so runs with different batch sizes take different numbers of steps; each is then
probed (linear phone probe, speaker probe) and summarised from its ``metrics.jsonl``. The
result is ``table.md`` (Markdown), ``curves.png`` (one row of panels per plotted metric) and
``summary.json`` in the output directory, with one training run directory per run beside them.

Preset format (every key but ``runs`` is optional)::

    name: rpc_batch                  # default: the file name
    description: free text, copied above the table
    budget_seconds: 6144             # audio seconds per run (overridable from the command line)
    base_overrides: [trainer.log_every=1, trainer.val_every=0]  # every run, before its own
    step_fractions:                  # config keys set to round(fraction × the run's steps)
      optim.warmup_steps: 0.1
    tail_fraction: 0.2               # the "last steps": final values and loss fluctuation
    runs:
      - name: cpc-b4                 # unique; also the run's directory name
        overrides: [objective=cpc, data.batch_size=4]
    columns:                         # table columns: a spec, or {header: spec}
      - objective: choice:objective
      - batch: config:data.batch_size
      - steps
      - final_loss
    plots:                           # one row of panels each, against audio seconds
      - metric: loss                 # a metric of metrics.jsonl
        panels: choice:objective     # one panel per distinct value of this spec (optional)
        smooth: 25                   # moving average over logged points (optional)
    probe:                           # keys of ProbeSettings; phone/speaker switch each probe
      speaker: true
    baselines: [log-mel, untrained]  # extra rows, probes only: log-mel features, and the first
                                     # run's architecture at initialisation (optional)

Column specs:

- ``run``: the run's name; ``steps``: optimizer steps; ``audio_seconds``: audio trained on;
  ``wall_seconds``: training time;
- ``final_loss``: mean training loss over the last ``tail_fraction`` of the logged steps;
- ``loss_cv``: coefficient of variation of the loss over those steps, ``std/|mean|``, with the
  std taken about a least-squares line so a still-falling loss does not count as noise. It is
  free of the loss's scale but not of its offset (CPC's loss sits near ``K·log(N+1)``) and is
  meaningless when the mean is near zero; ``loss_rel_std`` avoids both;
- ``loss_rel_std``: that same detrended std divided by the loss's total decrease (the mean of
  the first ``tail_fraction`` of the logged steps minus ``final_loss``): the noise in units of
  the progress made;
- ``probe_phone``, ``probe_speaker``: held-out frame (utterance) accuracy of the linear phone
  (speaker) probe;
- ``metric:<name>``: mean of a logged training metric over the tail (``metric:acc``);
- ``config:<dotted.key>``: a value of the run's resolved config (``config:data.batch_size``);
- ``choice:<group>``: the option chosen for a config group (``choice:objective``).

The noise measures depend on how often the loss is logged; presets log every step
(``trainer.log_every=1``). Steps are ``round(budget / (batch_size × accumulate × window /
16000))`` for one process. A run whose directory already holds a ``summary.json`` made with the
same overrides is not trained again (delete the directory to redo it); an interrupted run
resumes from its last checkpoint; a directory made with other overrides is an error, never
reused. Runs are trained by :func:`ssl_speech.train.__main__.run` on configs composed with
Hydra's compose API, exactly as ``python -m ssl_speech.train <overrides>`` would build them.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from ssl_speech.data.audio import SAMPLE_RATE
from ssl_speech.data.corpus import Utterance
from ssl_speech.runs.metrics_log import read_metrics
from ssl_speech.train import build

SUMMARY_COLUMNS = ("run", "steps", "audio_seconds", "wall_seconds", "final_loss", "loss_cv",
                   "loss_rel_std", "probe_phone", "probe_speaker")
PREFIXES = ("metric:", "config:", "choice:")
BASELINES = ("log-mel", "untrained")
SUMMARY_FILE = "summary.json"
OVERRIDES_FILE = "compare_overrides.json"


@dataclass
class ProbeSettings:
    """How each run is probed (the preset's ``probe`` mapping).

    Phone probe: ``train_utterances`` of the training split and ``test_utterances`` of the dev
    split, ``epochs`` of Adam at ``lr`` (the end-of-training quick probe's protocol). Speaker
    probe: the same training utterances split per speaker, ``speaker_test_fraction`` held out,
    features pooled by ``speaker_pooling``.
    """

    phone: bool = True
    speaker: bool = True
    layer: str = "context"
    train_utterances: int = 300
    test_utterances: int = 150
    epochs: int = 20
    lr: float = 2e-3
    speaker_epochs: int = 50
    speaker_lr: float = 1e-3
    speaker_pooling: str = "mean"
    speaker_test_fraction: float = 0.2

    def __post_init__(self) -> None:
        for name in ("train_utterances", "test_utterances", "epochs", "speaker_epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"probe.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class RunSpec:
    """One run of a preset: a name and its Hydra overrides."""

    name: str
    overrides: list[str]


@dataclass
class Preset:
    """A parsed preset (module docstring)."""

    name: str
    runs: list[RunSpec]
    budget_seconds: float
    description: str = ""
    base_overrides: list[str] = field(default_factory=list)
    step_fractions: dict[str, float] = field(default_factory=dict)
    tail_fraction: float = 0.2
    columns: list[tuple[str, str]] = field(default_factory=list)
    plots: list[dict[str, Any]] = field(default_factory=lambda: [{"metric": "loss"}])
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    baselines: list[str] = field(default_factory=list)


_PRESET_KEYS = {"name", "description", "budget_seconds", "base_overrides", "step_fractions",
                "tail_fraction", "runs", "columns", "plots", "probe", "baselines"}


def preset_path(name_or_path: str | Path) -> Path:
    """``configs/compare/<name>.yaml`` for a name, or the given file."""
    from ssl_speech.config import config_dir

    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    found = Path(config_dir()) / "compare" / f"{name_or_path}.yaml"
    if not found.is_file():
        known = sorted(p.stem for p in found.parent.glob("*.yaml"))
        raise FileNotFoundError(f"no compare preset {name_or_path!r}: expected {found} or a "
                                f"YAML file; known presets: {known}")
    return found


def _check_spec(spec: str, where: str) -> str:
    if spec in SUMMARY_COLUMNS or (spec.startswith(PREFIXES) and spec.split(":", 1)[1]):
        return spec
    raise ValueError(f"{where}: unknown column spec {spec!r}; use one of {SUMMARY_COLUMNS} or "
                     "metric:<name>, config:<dotted.key>, choice:<group>")


def parse_preset(raw: dict[str, Any], default_name: str) -> Preset:
    """Validate a preset mapping (as loaded from YAML) and build a :class:`Preset`."""
    unknown = sorted(set(raw) - _PRESET_KEYS)
    if unknown:
        raise ValueError(f"preset {default_name!r}: unknown keys {unknown}; "
                         f"allowed: {sorted(_PRESET_KEYS)}")
    name = str(raw.get("name", default_name))
    runs_raw = raw.get("runs") or []
    if not runs_raw:
        raise ValueError(f"preset {name!r} has no runs: add runs: [{{name, overrides}}, ...]")
    runs = []
    for i, item in enumerate(runs_raw):
        if not isinstance(item, dict) or "name" not in item:
            raise ValueError(f"preset {name!r}: run {i} must be a mapping with a name and "
                             f"overrides, got {item!r}")
        extra = sorted(set(item) - {"name", "overrides"})
        if extra:
            raise ValueError(f"preset {name!r}: run {item['name']!r} has unknown keys {extra}")
        runs.append(RunSpec(str(item["name"]), [str(o) for o in item.get("overrides") or []]))
    names = [r.name for r in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"preset {name!r}: run names must be unique, repeated {duplicates}")
    bad = [n for n in names if not n or "/" in n or n.startswith(".")]
    if bad:
        raise ValueError(f"preset {name!r}: run names {bad} cannot be directory names")
    budget = float(raw.get("budget_seconds", 0))
    if not budget > 0:
        raise ValueError(f"preset {name!r}: budget_seconds must be > 0, got "
                         f"{raw.get('budget_seconds')!r}")
    tail = float(raw.get("tail_fraction", 0.2))
    if not 0 < tail <= 0.5:
        raise ValueError(f"preset {name!r}: tail_fraction must be in (0, 0.5], got {tail}")
    fractions = {str(k): float(v) for k, v in (raw.get("step_fractions") or {}).items()}
    for key, value in fractions.items():
        if not 0 <= value <= 1:
            raise ValueError(f"preset {name!r}: step_fractions.{key}={value} is not in [0, 1]")
    columns = []
    for item in raw.get("columns") or ["run", "steps", "final_loss", "loss_cv"]:
        if isinstance(item, dict) and len(item) == 1:
            header, spec = next(iter(item.items()))
        elif isinstance(item, str):
            header, spec = item, item
        else:
            raise ValueError(f"preset {name!r}: a column is a spec or {{header: spec}}, "
                             f"got {item!r}")
        columns.append((str(header), _check_spec(str(spec), f"preset {name!r}")))
    plots = [dict(p) for p in raw.get("plots") or [{"metric": "loss"}]]
    for plot in plots:
        if "metric" not in plot or set(plot) - {"metric", "panels", "smooth"}:
            raise ValueError(f"preset {name!r}: a plot is {{metric, panels?, smooth?}}, "
                             f"got {plot!r}")
        if plot.get("panels"):
            _check_spec(str(plot["panels"]), f"preset {name!r} plot panels")
    probe_raw = dict(raw.get("probe") or {})
    allowed = {f.name for f in fields(ProbeSettings)}
    if set(probe_raw) - allowed:
        raise ValueError(f"preset {name!r}: unknown probe keys {sorted(set(probe_raw) - allowed)}"
                         f"; allowed: {sorted(allowed)}")
    baselines = [str(b) for b in raw.get("baselines") or []]
    if set(baselines) - set(BASELINES):
        raise ValueError(f"preset {name!r}: baselines {baselines} must be among {BASELINES}")
    return Preset(name=name, runs=runs, budget_seconds=budget,
                  description=str(raw.get("description", "")).strip(),
                  base_overrides=[str(o) for o in raw.get("base_overrides") or []],
                  step_fractions=fractions, tail_fraction=tail, columns=columns, plots=plots,
                  probe=ProbeSettings(**probe_raw), baselines=baselines)


def load_preset(name_or_path: str | Path) -> Preset:
    """Read and validate a preset by name (``configs/compare/<name>.yaml``) or path."""
    path = preset_path(name_or_path)
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(raw, dict):
        raise ValueError(f"preset {path} must be a mapping, got {type(raw).__name__}")
    return parse_preset(raw, path.stem)


# ------------------------------------------------------------------------------- configs
def compose_run(overrides: Sequence[str]) -> tuple[DictConfig, dict[str, str]]:
    """The training config for ``overrides`` and the chosen option of each config group."""
    from hydra import compose, initialize_config_dir

    from ssl_speech.config import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    choices = {k: str(v) for k, v in cfg.hydra.runtime.choices.items()
               if not k.startswith("hydra/")}
    with open_dict(cfg):
        del cfg["hydra"]  # the run needs none of it, and it does not resolve outside Hydra
    return cfg, choices


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
def probe_data(cfg: DictConfig, settings: ProbeSettings) -> dict[str, Any]:
    """The probe's utterances and labels, picked as the end-of-training quick probe picks them."""
    from ssl_speech.eval.quick_probe import labels_for, pick_utterances

    source = build.resolve_data_source(cfg.data, progress=False)
    alignments = build.read_labels(source)
    train_corpus = build.load_split_corpus(source, source.train_split, "skip", 0)
    test_corpus = build.load_split_corpus(source, source.dev_split or source.train_split,
                                          "skip", 0)
    seed = int(cfg.seed)
    train = pick_utterances(train_corpus, settings.train_utterances, seed)
    test = pick_utterances(test_corpus, settings.test_utterances, seed + 1)
    data: dict[str, Any] = {"train": train, "test": test, "seed": seed}
    if settings.phone:
        if alignments is None:
            raise ValueError("the phone probe needs phone alignments (data.alignments); set "
                             "probe.phone: false in the preset for a corpus without them")
        data["train_labels"] = labels_for(train, alignments)
        data["test_labels"] = labels_for(test, alignments)
    return data


def probe_features(
    features_of: Callable[[list[Utterance]], dict[str, np.ndarray]],
    frame_step: float,
    data: dict[str, Any],
    settings: ProbeSettings,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Phone and speaker probe accuracies of one feature source.

    Args:
        features_of: ``utterances -> {utt: (T, D) features}``.
        frame_step: seconds per feature frame.
        data: from :func:`probe_data`.
    """
    from ssl_speech.eval.phone_probe import train_phone_probe
    from ssl_speech.eval.speaker_probe import held_out_utterance_split, train_speaker_probe

    train_features = features_of(data["train"])
    out: dict[str, float] = {}
    if settings.phone:
        results = train_phone_probe(
            train_features, data["train_labels"],
            {"dev": (features_of(data["test"]), data["test_labels"])},
            frame_step=frame_step, epochs=settings.epochs, lr=settings.lr, seed=data["seed"],
            device=device,
        )
        out["probe_phone"] = results["dev"].accuracy
    if settings.speaker:
        speakers = {u.id: u.speaker for u in data["train"]}
        train_ids, test_ids = held_out_utterance_split(
            speakers, settings.speaker_test_fraction, seed=data["seed"])
        results = train_speaker_probe(
            {u: train_features[u] for u in train_ids}, speakers,
            {"dev": ({u: train_features[u] for u in test_ids}, speakers)},
            pooling=settings.speaker_pooling, epochs=settings.speaker_epochs,
            lr=settings.speaker_lr, seed=data["seed"], device=device,
        )
        out["probe_speaker"] = results["dev"].accuracy
    return out


def probe_model(model: torch.nn.Module, data: dict[str, Any],
                settings: ProbeSettings) -> dict[str, float]:
    """Probe a model's frozen features (layer ``settings.layer``)."""
    from ssl_speech.eval.features import extract_corpus_features

    device = next(model.parameters()).device
    return probe_features(lambda utts: extract_corpus_features(model, utts, settings.layer),
                          float(model.hop) / SAMPLE_RATE, data, settings, device)


def probe_baseline(kind: str, cfg: DictConfig, data: dict[str, Any],
                   settings: ProbeSettings) -> dict[str, float]:
    """Probe log-mel features or the run's architecture at initialisation (seed ``cfg.seed``)."""
    from ssl_speech.eval.quick_probe import log_mel_of
    from ssl_speech.train.rng import seed_everything

    if kind == "log-mel":
        return probe_features(log_mel_of, 0.01, data, settings)
    if kind == "untrained":
        seed_everything(int(cfg.seed))
        return probe_model(build.build_model(cfg), data, settings)
    raise ValueError(f"unknown baseline {kind!r}; use one of {BASELINES}")


# ------------------------------------------------------------------------------- summaries
def _train_series(records: list[dict[str, Any]], metric: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [(r["step"], r[metric]) for r in records
            if r.get("split") == "train" and isinstance(r.get(metric), int | float)]
    if not rows:
        return np.zeros(0), np.zeros(0)
    steps, values = zip(*rows)
    return np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)


def _tail(count: int, fraction: float) -> int:
    return max(2, math.ceil(fraction * count)) if count >= 2 else count


def loss_statistics(steps: np.ndarray, loss: np.ndarray, tail_fraction: float) -> dict[str, float]:
    """``final_loss``, ``loss_cv`` and ``loss_rel_std`` (module docstring) of one loss curve."""
    n = len(loss)
    if n == 0:
        return {"final_loss": math.nan, "loss_cv": math.nan, "loss_rel_std": math.nan}
    k = _tail(n, tail_fraction)
    x, y = steps[-k:], loss[-k:]
    final = float(y.mean())
    if k >= 3 and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        std = float(np.std(y - (slope * x + intercept), ddof=2))
    else:
        std = float(np.std(y))
    head = float(loss[:k].mean())
    drop = head - final
    return {
        "final_loss": final,
        "loss_cv": std / abs(final) if final != 0 else math.inf,
        "loss_rel_std": std / drop if drop > 0 else math.inf,
    }


def summarise_run(run_dir: Path, tail_fraction: float) -> dict[str, Any]:
    """Loss statistics and the tail mean of every logged training metric of a run."""
    records = read_metrics(run_dir)
    steps, loss = _train_series(records, "loss")
    summary: dict[str, Any] = loss_statistics(steps, loss, tail_fraction)
    names = sorted({k for r in records if r.get("split") == "train" for k in r}
                   - {"step", "split", "time", "epoch"})
    metrics = {}
    for name in names:
        _, values = _train_series(records, name)
        if len(values):
            metrics[name] = float(values[-_tail(len(values), tail_fraction):].mean())
    summary["metrics"] = metrics
    times = [r["time"] for r in records if r.get("split") == "train" and "time" in r]
    summary["logged_steps"] = len(loss)
    summary["last_step"] = int(steps[-1]) if len(steps) else 0
    summary["train_span_seconds"] = float(times[-1] - times[0]) if len(times) > 1 else 0.0
    return summary


def column_value(row: dict[str, Any], spec: str) -> Any:
    """The value of a column spec in a result row (module docstring)."""
    if spec in SUMMARY_COLUMNS:
        return row.get(spec)
    kind, key = spec.split(":", 1)
    if kind == "metric":
        return row.get("metrics", {}).get(key)
    if kind == "choice":
        return row.get("choices", {}).get(key)
    value: Any = row.get("config")
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _format(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return "–" if math.isnan(value) else "∞"
        if abs(value) >= 1000 or value == int(value) and abs(value) >= 1:
            return f"{value:.0f}"
        return f"{value:.4g}" if abs(value) >= 1e-3 else f"{value:.2e}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A Markdown table: one row per result row, one column per ``(header, spec)``."""
    lines = ["| " + " | ".join(h for h, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_format(column_value(row, s)) for _, s in columns) + " |")
    return "\n".join(lines) + "\n"


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < window:
        return values
    kernel = np.ones(window) / window
    head = np.cumsum(values[: window - 1]) / np.arange(1, window)
    return np.concatenate([head, np.convolve(values, kernel, mode="valid")])


def plot_curves(rows: list[dict[str, Any]], plots: list[dict[str, Any]], path: Path) -> Path:
    """Training curves against audio seconds: one row of panels per plot entry."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = [r for r in rows if r.get("run_dir")]
    layout = []
    for plot in plots:
        spec = plot.get("panels")
        keys = sorted({str(column_value(r, spec)) for r in trained}) if spec else [""]
        layout.append((plot, spec, keys))
    width = max(len(keys) for _, _, keys in layout)
    fig, axes = plt.subplots(len(layout), width, figsize=(5.5 * width, 3.8 * len(layout)),
                             squeeze=False)
    for i, (plot, spec, keys) in enumerate(layout):
        metric = str(plot["metric"])
        for j in range(width):
            ax = axes[i][j]
            if j >= len(keys):
                ax.axis("off")
                continue
            for row in trained:
                if spec and str(column_value(row, spec)) != keys[j]:
                    continue
                steps, values = _train_series(read_metrics(row["run_dir"]), metric)
                if not len(values):
                    continue
                seconds = steps * row["seconds_per_step"]
                ax.plot(seconds, _smooth(values, int(plot.get("smooth", 1))), lw=1.2,
                        label=row["run"])
            title = metric + (f" — {spec.split(':', 1)[-1]} {keys[j]}" if spec else "")
            ax.set_title(title)
            ax.set_xlabel("audio seconds trained")
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    from ssl_speech.train.__main__ import run

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
        row.update(probe_model(result.model, probe_data(cfg, preset.probe), preset.probe))
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
            data = probe_data(cfg, preset.probe)
        _log(f"probing the {kind} baseline")
        row = {"run": kind, **probe_baseline(kind, cfg, data, preset.probe)}
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
