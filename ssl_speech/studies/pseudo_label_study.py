"""Does the utility estimate predict which pretext target helps? The validation study.

On a corpus with phone alignments (the embedded corpus by default), with both estimator
settings (``ours`` and ``reference``, :mod:`ssl_speech.eval.utility`) and both downstream tasks
(phones, speakers):

1. estimate every candidate's utility on training utterances (lower: predicted more useful);
   the candidates include the two controls, white ``noise`` and ``class_function`` (a fixed
   random value per class of the task), so the ranking spans the scale;
2. pretrain the same model (log-mel encoder, LSTM context: the library's defaults) on each
   candidate alone, for each seed, same budget: :class:`PseudoLabelRegression` on a descriptor,
   :class:`ClassFunctionRegression` on the class function (one run per task: the phone or the
   speaker of each frame);
3. probe each run: linear phone probe (frame accuracy on dev utterances) and linear speaker
   probe (held-out utterances of the training speakers); the same probes on the untrained
   model, per seed, are the floor;
4. Spearman's rho between each setting's estimates and the accuracies of each task (one point
   per candidate, accuracies averaged over seeds), with a permutation p-value and a bootstrap
   interval (:mod:`ssl_speech.eval.utility_validation`). The estimator predicts rho < 0.

The correlation answers only if pretraining helps at the budget: the summary counts the runs
that probe above the untrained model and says so when most do not. Each run's result is written
to ``<out>/results/<run>.json`` as soon as it is known and read back on a rerun, and the runs
resume from their checkpoints, so an interrupted study continues where it stopped.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ssl_speech.data.corpus import Corpus, Utterance
from ssl_speech.eval.features import model_features
from ssl_speech.eval.probing import ProbeSplit, probe
from ssl_speech.eval.protocols import ProbeProtocol, SpeakerProtocol
from ssl_speech.eval.quick_probe import pick_utterances
from ssl_speech.eval.utility import (
    CLASS_CONTROL,
    TASKS,
    estimate_utilities,
    estimator_setting,
    extract_corpus_signals,
    task_segments,
)
from ssl_speech.eval.utility_validation import (
    RankCorrelation,
    ValidationPanel,
    ValidationPoint,
    plot_validation,
    rank_correlation,
)
from ssl_speech.signal.pseudo_labels import check_names

CANDIDATES = ("f0", "voicing", "rms", "loudness", "spectral_centroid", "spectral_flatness",
              "zcr", "mfcc", "noise", CLASS_CONTROL)


@dataclass
class StudySettings:
    """What the study trains and measures; every run gets the same.

    Attributes:
        candidates: pseudo-labels to compare (registered names, and ``class_function``).
        seeds: a run per candidate and seed (and per task for ``class_function``).
        estimator_settings: the utility settings whose estimates are correlated.
        steps: optimizer steps of each pretraining run.
        encoder, encoder_dim, context_dim: the encoder config (``logmel``: the library's
            default) and the sizes of the encoder and the LSTM context.
        window, batch_size, lr, warmup_steps, loss: training windows (samples), windows per
            batch, AdamW peak learning rate, linear warm-up, ``"mse"`` or ``"l1"``.
        probe_train_utterances, probe_test_utterances, probe_epochs, probe_lr: the phone probe.
        speaker_utterances, speaker_epochs: the speaker probe (training utterances, a fifth of
            each speaker's held out).
        estimate_utterances: training utterances the utility is estimated on.
        class_function_tasks: the tasks whose class function is trained (``phone`` needs a
            training loader that puts the alignments in the batch).
        threads: torch CPU threads.
    """

    candidates: tuple[str, ...] = CANDIDATES
    seeds: tuple[int, ...] = (0, 1)
    estimator_settings: tuple[str, ...] = ("ours", "reference")
    steps: int = 1500
    encoder: str = "logmel"
    encoder_dim: int = 128
    context_dim: int = 128
    window: int = 20480
    batch_size: int = 8
    lr: float = 1e-3
    warmup_steps: int = 100
    loss: str = "mse"
    probe_train_utterances: int = 200
    probe_test_utterances: int = 100
    probe_epochs: int = 20
    probe_lr: float = 2e-3
    speaker_utterances: int = 400
    speaker_epochs: int = 50
    estimate_utterances: int = 200
    class_function_tasks: tuple[str, ...] = TASKS
    threads: int = 1

    def __post_init__(self) -> None:
        self.candidates = tuple(self.candidates)
        check_names([c for c in self.candidates if c != CLASS_CONTROL])
        if len(self.candidates) < 3:
            raise ValueError(f"a rank correlation needs at least 3 candidates, got "
                             f"{list(self.candidates)}")
        self.seeds, self.estimator_settings = tuple(self.seeds), tuple(self.estimator_settings)
        if not self.seeds:
            raise ValueError("StudySettings.seeds needs at least one seed")
        for name in self.estimator_settings:
            estimator_setting(name)
        self.class_function_tasks = tuple(self.class_function_tasks)
        if not set(self.class_function_tasks) <= set(TASKS):
            raise ValueError(f"class_function_tasks must be among {TASKS}, got "
                             f"{self.class_function_tasks}")
        for name in ("steps", "encoder_dim", "context_dim", "batch_size", "probe_epochs",
                     "probe_train_utterances", "probe_test_utterances", "speaker_utterances",
                     "speaker_epochs", "estimate_utterances", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"StudySettings.{name} must be >= 1, got {getattr(self, name)}")

    def runs(self) -> list[tuple[str, str, int, str | None]]:
        """``(run name, candidate, seed, class-function task)`` in training order: every
        descriptor run first, the class-function runs (one per task) last."""
        plain = [(f"{c}-seed{s}", c, s, None) for s in self.seeds for c in self.candidates
                 if c != CLASS_CONTROL]
        controls = [(f"{CLASS_CONTROL}-{t}-seed{s}", CLASS_CONTROL, s, t) for s in self.seeds
                    for t in self.class_function_tasks] if CLASS_CONTROL in self.candidates else []
        return plain + controls


@dataclass
class RunResult:
    """One pretraining run and its probes (``None``: that task was not probed: a
    class-function run is probed on its own task only)."""

    run: str
    candidate: str
    seed: int
    phone_accuracy: float | None
    speaker_accuracy: float | None
    final_loss: float
    train_seconds: float


@dataclass
class StudyResult:
    """Runs, estimates, floors and correlations.

    Attributes:
        runs: one :class:`RunResult` per run.
        estimates: ``{setting: {task: {candidate: uniform HSIC}}}``.
        untrained: ``{task: [accuracy of the untrained model, per seed]}``.
        correlations: ``{setting: {task: RankCorrelation as a dict}}``.
        above_untrained: ``{task: share of the non-control runs above the mean floor}``.
    """

    runs: list[RunResult]
    estimates: dict[str, dict[str, dict[str, float]]]
    untrained: dict[str, list[float]]
    correlations: dict[str, dict[str, dict]]
    above_untrained: dict[str, float]
    settings: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Runs and probes
# --------------------------------------------------------------------------------------------


def compose_run_config(settings: StudySettings, candidate: str, seed: int, run_dir: Path,
                       corpus_root: Path | None = None, class_task: str | None = None,
                       extra: Sequence[str] = ()):
    """The training config of one run (Hydra's compose API)."""
    from ssl_speech.config import compose

    data = ["data=synthetic"] if corpus_root is None else [
        "data=librispeech", f"data.root={corpus_root}",
        f"data.alignments={corpus_root}/alignments.txt", "data.train_split=train",
        "data.dev_split=dev",
    ]
    target = [f"objective.label={candidate}"] if class_task is None else [
        "objective.label=noise",
        "objective._target_=ssl_speech.objectives.class_function_regression."
        "ClassFunctionRegression",
        f"+objective.classes={class_task}", f"+objective.seed={seed}",
        *(["data.frame_labels=true"] if class_task == "phone" else []),
    ]
    overrides = [
        *data, "objective=pseudo_label", *target, f"objective.loss={settings.loss}",
        f"encoder={settings.encoder}", "context=lstm",
        f"encoder.dim={settings.encoder_dim}", f"context.dim={settings.context_dim}",
        f"data.window={settings.window}", f"data.batch_size={settings.batch_size}",
        "optim=adamw", f"optim.optimizer.lr={settings.lr}",
        f"optim.warmup_steps={settings.warmup_steps}",
        f"trainer.max_steps={settings.steps}", f"trainer.checkpoint_every={settings.steps}",
        "trainer.val_every=0", f"trainer.log_every={max(1, min(10, settings.steps // 10))}",
        "trainer.progress=false",
        "trainer.tensorboard=false", "trainer.device=cpu", f"trainer.threads={settings.threads}",
        "probe.enabled=false", f"seed={seed}", f"run_dir={run_dir}",
        f"run_name=pseudo_label-{run_dir.name}", *extra,
    ]
    return compose(overrides)


def _training_figures(run_dir: Path, records: int = 5) -> tuple[float, float]:
    """From a run's log: the regression loss averaged over the last ``records`` training
    records, and the training time (extrapolated from the logged steps to all of them)."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    train = [r for r in map(json.loads, lines) if r.get("split") == "train"]
    losses = [r["loss/regression"] for r in train if "loss/regression" in r]
    loss = float(np.mean(losses[-records:])) if losses else float("nan")
    if len(train) < 2:
        return loss, float("nan")
    first, last = train[0], train[-1]
    per_step = (last["time"] - first["time"]) / max(last["step"] - first["step"], 1)
    return loss, per_step * last["step"]


def _probe_accuracy(model: torch.nn.Module, train: list[Utterance], test: list[Utterance],
                    alignments: dict[str, np.ndarray], settings: StudySettings,
                    seed: int = 0) -> float:
    """Phone accuracy on ``test`` of a linear probe trained on ``train`` for a fixed number of
    epochs (every run gets the same schedule)."""
    split = ProbeSplit({u.id: alignments[u.id] for u in [*train, *test]}, [u.id for u in train],
                       {"dev": [u.id for u in test]})
    protocol = ProbeProtocol(name="fixed", epochs=settings.probe_epochs, lr=settings.probe_lr,
                             validation_fraction=None, patience=None, seed=seed)
    features = model_features(model, [*train, *test], "context")
    outcome = probe({"model": features}, split, protocol, in_memory=True)["model"]
    return outcome.phone["dev"].accuracy


def _speaker_accuracy(model: torch.nn.Module, utterances: list[Utterance],
                      settings: StudySettings, seed: int = 0) -> float:
    """Speaker accuracy on held-out utterances of the same speakers."""
    split = ProbeSplit({}, [u.id for u in utterances], {},
                       speakers={u.id: u.speaker for u in utterances})
    protocol = SpeakerProtocol(epochs=settings.speaker_epochs, seed=seed)
    features = model_features(model, utterances, "context")
    outcome = probe({"model": features}, split, speaker_protocol=protocol, phone=False,
                    in_memory=True)["model"]
    return outcome.speaker.accuracy


def _estimates(settings: StudySettings, utterances: list[Utterance],
               alignments: dict[str, np.ndarray]) -> dict[str, dict[str, dict[str, float]]]:
    names = [c for c in settings.candidates if c != CLASS_CONTROL]
    features = extract_corpus_signals(utterances, names)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in settings.estimator_settings:
        setting = estimator_setting(name)
        out[name] = {}
        for task in TASKS:
            segments = task_segments(features, task, alignments,
                                     chunk_frames=setting.speaker_chunk_frames)
            estimates = estimate_utilities(features, segments, task, setting,
                                           controls=CLASS_CONTROL in settings.candidates,
                                           seed=settings.seeds[0])
            out[name][task] = {e.name: e.uniform for e in estimates}
    return out


def candidate_accuracies(runs: Sequence[RunResult], task: str) -> dict[str, float]:
    """Each candidate's accuracy on ``task``, averaged over its runs (seeds) probed on it."""
    key = f"{task}_accuracy"
    by: dict[str, list[float]] = {}
    for r in runs:
        if getattr(r, key) is not None:
            by.setdefault(r.candidate, []).append(getattr(r, key))
    return {c: float(np.mean(v)) for c, v in by.items()}


def correlations(runs: Sequence[RunResult], estimates: dict[str, dict[str, dict[str, float]]],
                 seed: int = 0) -> dict[str, dict[str, RankCorrelation]]:
    """Spearman's rho of each setting's and task's estimates with the candidates' accuracies
    (candidates whose estimate is undefined, NaN, are left out)."""
    out: dict[str, dict[str, RankCorrelation]] = {}
    for setting, by_task in estimates.items():
        out[setting] = {}
        for task, values in by_task.items():
            accuracy = candidate_accuracies(runs, task)
            common = [c for c in accuracy if c in values and np.isfinite(values[c])]
            if len(common) >= 3:
                out[setting][task] = rank_correlation([values[c] for c in common],
                                                      [accuracy[c] for c in common], seed)
    return out


# --------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------


def run_study(out_dir: str | Path, settings: StudySettings | None = None,
              corpus_root: str | Path | None = None, log=print) -> StudyResult:
    """Run (or continue) the study; write ``study.json``, ``study.md`` and ``study.png``
    (without matplotlib: no plot) to ``out_dir``.

    Args:
        out_dir: where runs, per-run results and the summary go.
        settings: what to train and measure (defaults: :class:`StudySettings`).
        corpus_root: a corpus in LibriSpeech layout with ``alignments.txt`` and ``splits/``
            (default: the embedded corpus, generated if needed).
        log: called with progress lines.
    """
    from ssl_speech.data.corpus import load_corpus
    from ssl_speech.data.labels import read_alignments
    from ssl_speech.train import build
    from ssl_speech.train.api import train as run
    from ssl_speech.train.rng import seed_everything

    settings = settings or StudySettings()
    out = Path(out_dir)
    (out / "results").mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(settings.threads)
    root = Path(corpus_root) if corpus_root is not None else None
    seed0 = settings.seeds[0]
    first_cfg = compose_run_config(settings, "rms", seed0, out / "runs" / "untrained", root)
    source = build.resolve_data_source(first_cfg.data, progress=False)
    alignments = read_alignments(source.alignments)
    train_corpus: Corpus = load_corpus(root=source.root, split="train")
    dev_corpus: Corpus = load_corpus(root=source.root, split="dev")
    probe_train = pick_utterances(train_corpus, settings.probe_train_utterances, seed0)
    probe_test = pick_utterances(dev_corpus, settings.probe_test_utterances, seed0 + 1)
    speaker_utts = pick_utterances(train_corpus, settings.speaker_utterances, seed0 + 3)

    def probe(model: nn.Module, seed: int, tasks: Sequence[str]) -> dict[str, float | None]:
        return {
            "phone": _probe_accuracy(model, probe_train, probe_test, alignments, settings, seed)
            if "phone" in tasks else None,
            "speaker": _speaker_accuracy(model, speaker_utts, settings, seed)
            if "speaker" in tasks else None,
        }

    log(f"utility estimates of {len(settings.candidates)} candidates on "
        f"{settings.estimate_utterances} training utterances")
    began = time.perf_counter()
    estimates = _estimates(settings, pick_utterances(
        train_corpus, settings.estimate_utterances, seed0 + 2), alignments)
    log(f"  done in {time.perf_counter() - began:.0f} s")

    untrained: dict[str, list[float]] = {task: [] for task in TASKS}
    for seed in settings.seeds:
        seed_everything(seed)
        floor = probe(build.build_model(first_cfg), seed, TASKS)
        for task in TASKS:
            untrained[task].append(floor[task])
        log(f"untrained model, seed {seed}: phone {100 * floor['phone']:.2f} %, speaker "
            f"{100 * floor['speaker']:.2f} %")

    runs = []
    for run_name, candidate, seed, class_task in settings.runs():
        saved = out / "results" / f"{run_name}.json"
        if saved.is_file():
            runs.append(RunResult(**json.loads(saved.read_text())))
            log(f"{run_name}: read back from {saved}")
            continue
        run_dir = out / "runs" / run_name
        result = run(compose_run_config(settings, candidate, seed, run_dir, root, class_task))
        final_loss, seconds = _training_figures(run_dir)
        accuracy = probe(result.model, seed, TASKS if class_task is None else (class_task,))
        row = RunResult(run_name, candidate, seed, accuracy["phone"], accuracy["speaker"],
                        final_loss, seconds)
        saved.write_text(json.dumps(asdict(row), indent=2) + "\n")
        runs.append(row)
        shown = ", ".join(f"{t} {100 * a:.2f} %" for t, a in accuracy.items() if a is not None)
        log(f"{run_name}: {shown} (trained in {seconds:.0f} s, final loss {final_loss:.3f})")

    above = {}
    for task in TASKS:
        floor = float(np.mean(untrained[task]))
        scored = [getattr(r, f"{task}_accuracy") for r in runs
                  if r.candidate not in ("noise", CLASS_CONTROL)
                  and getattr(r, f"{task}_accuracy") is not None]
        above[task] = float(np.mean([a > floor for a in scored])) if scored else float("nan")
    study = StudyResult(
        runs=runs, estimates=estimates, untrained=untrained,
        correlations={s: {t: asdict(c) for t, c in by.items()}
                      for s, by in correlations(runs, estimates, seed0).items()},
        above_untrained=above, settings=asdict(settings))
    (out / "study.json").write_text(json.dumps(asdict(study), indent=2) + "\n")
    (out / "study.md").write_text(format_study(study) + "\n")
    plot_study(study, out / "study.png")
    return study


def format_study(study: StudyResult) -> str:
    """Markdown: per candidate its estimates and accuracies, the floors, the correlations."""
    settings = list(study.estimates)
    head = ["candidate"] + [f"{s} {t}" for s in settings for t in TASKS] + [
        f"{t} acc. (%)" for t in TASKS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    accuracy = {t: candidate_accuracies(study.runs, t) for t in TASKS}
    for c in dict.fromkeys(r.candidate for r in study.runs):
        cells = [c] + [f"{study.estimates[s][t].get(c, float('nan')):.4g}" for s in settings
                       for t in TASKS]
        cells += [f"{100 * accuracy[t][c]:.2f}" if c in accuracy[t] else "" for t in TASKS]
        lines.append("| " + " | ".join(cells) + " |")
    floors = [f"{100 * np.mean(study.untrained[t]):.2f}" for t in TASKS]
    lines.append("| (untrained) | " + " | " * (len(settings) * len(TASKS) - 1) + " | "
                 + " | ".join(floors) + " |")
    lines.append("")
    for t in TASKS:
        lines.append(f"- {t}: {100 * study.above_untrained[t]:.0f} % of the descriptor runs "
                     "probe above the untrained model"
                     + ("" if study.above_untrained[t] >= 0.5 else
                        " (most do not: the budget is too small for the correlation to answer)"))
    for s, by in study.correlations.items():
        for t, c in by.items():
            lines.append(f"- Spearman, {s} estimate vs {t} accuracy: "
                         f"{RankCorrelation(**c).describe()} (the estimator predicts rho < 0)")
    return "\n".join(lines)


def plot_study(study: StudyResult, path: str | Path) -> Path | None:
    """Estimate vs probe accuracy, one point per run (marker: seed; controls in red), a panel
    per setting and task, the untrained floor dashed (needs matplotlib, else ``None``)."""
    panels = []
    for s in study.estimates:
        for t in TASKS:
            points = [ValidationPoint(study.estimates[s][t].get(r.candidate, float("nan")),
                                      getattr(r, f"{t}_accuracy"), r.candidate, r.seed,
                                      r.candidate in ("noise", CLASS_CONTROL))
                      for r in study.runs if getattr(r, f"{t}_accuracy") is not None]
            panels.append(ValidationPanel(f"{s} estimate (lower: predicted more useful)",
                                          f"{t} probe accuracy", points,
                                          float(np.mean(study.untrained[t]))))
    return plot_validation(panels, path, columns=len(TASKS))


def main_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
