"""Compare presets: which runs a comparison trains, and what its table and plots show.

A *preset* is a YAML file in ``ssl_speech/studies/presets/`` (shipped with the package) or
any path that names a list of runs, each
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
    baselines: [log-mel, mfcc, untrained]  # extra rows, probes only: log-mel and MFCC
                                     # features, and the first run's architecture at
                                     # initialisation (optional)

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
reused. Runs are trained by :func:`ssl_speech.train.api.train` on configs composed with
Hydra's compose API, exactly as ``python -m ssl_speech.train <overrides>`` would build them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ssl_speech.eval.protocols import ProbeProtocol, SpeakerProtocol

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
SUMMARY_COLUMNS = ("run", "steps", "audio_seconds", "wall_seconds", "final_loss", "loss_cv",
                   "loss_rel_std", "probe_phone", "probe_speaker")
PREFIXES = ("metric:", "config:", "choice:")
BASELINES = ("log-mel", "mfcc", "untrained")


@dataclass
class ProbeSettings:
    """How each run is probed (the preset's ``probe`` mapping).

    Phone probe: ``train_utterances`` of the training split and ``test_utterances`` of the dev
    split (drawn as the end-of-training probe draws them), under ``protocol`` (``converged``
    or ``cpc_audio``, :mod:`ssl_speech.eval.protocols`); ``epochs`` and ``lr`` change the
    protocol's epoch limit and learning rate when given. Speaker probe: the same training
    utterances split per speaker, ``speaker_test_fraction`` held out, features pooled by
    ``speaker_pooling``.
    """

    phone: bool = True
    speaker: bool = True
    layer: str = "context"
    train_utterances: int = 300
    test_utterances: int = 150
    protocol: str = "converged"
    epochs: int | None = None
    lr: float | None = None
    speaker_epochs: int = 50
    speaker_lr: float = 1e-3
    speaker_pooling: str = "mean"
    speaker_test_fraction: float = 0.2

    def __post_init__(self) -> None:
        for name in ("train_utterances", "test_utterances", "epochs", "speaker_epochs"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise ValueError(f"probe.{name} must be >= 1, got {getattr(self, name)}")
        self.phone_protocol(0)  # an unknown protocol or a bad lr fails at load time
        self.speaker_protocol(0)

    def phone_protocol(self, seed: int) -> ProbeProtocol:
        return ProbeProtocol.named(self.protocol, epochs=self.epochs, lr=self.lr, seed=seed)

    def speaker_protocol(self, seed: int) -> SpeakerProtocol:
        return SpeakerProtocol(pooling=self.speaker_pooling,
                               test_fraction=self.speaker_test_fraction,
                               epochs=self.speaker_epochs, lr=self.speaker_lr, seed=seed)


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


def shipped_presets() -> list[str]:
    """Names of the presets shipped with the package."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def preset_path(name_or_path: str | Path) -> Path:
    """``ssl_speech/studies/presets/<name>.yaml`` for a name, or the given file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    found = PRESETS_DIR / f"{name_or_path}.yaml"
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
    """Read and validate a preset by name (:func:`shipped_presets`) or path."""
    path = preset_path(name_or_path)
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(raw, dict):
        raise ValueError(f"preset {path} must be a mapping, got {type(raw).__name__}")
    return parse_preset(raw, path.stem)
