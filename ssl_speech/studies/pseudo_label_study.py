"""Does the utility estimate predict which pretext target helps? A small validation study.

On a corpus with phone alignments (the embedded corpus by default), for each candidate
pseudo-label:

1. estimate its utility for the phone task (:func:`ssl_speech.eval.utility.rank_pseudo_labels`
   on training utterances; lower HSIC: predicted more useful);
2. pretrain the same small model (CPC encoder and LSTM context) with
   :class:`~ssl_speech.objectives.pseudo_label_regression.PseudoLabelRegression` on that
   candidate alone, same seed, same number of steps;
3. probe it: the linear phone probe (:mod:`ssl_speech.eval.phone_probe`) on frozen context
   features, frame accuracy on held-out (dev) utterances.

Then Spearman's rank correlation between the estimates and the accuracies: the estimator works
if it is clearly negative (lower estimate, higher accuracy). The same probe on the untrained
model is reported beside them as the floor. Each candidate's result is written to
``<out>/results/<name>.json`` as soon as it is known and read back on a rerun, and the runs
resume from their checkpoints, so an interrupted study continues where it stopped.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ssl_speech.data.audio import SAMPLE_RATE
from ssl_speech.data.corpus import Corpus, Utterance
from ssl_speech.eval.features import extract_corpus_features
from ssl_speech.eval.phone_probe import train_phone_probe
from ssl_speech.eval.quick_probe import pick_utterances
from ssl_speech.eval.utility import rank_pseudo_labels
from ssl_speech.signal.pseudo_labels import check_names

CANDIDATES = ("f0", "voicing", "rms", "spectral_centroid", "zcr", "mfcc")


@dataclass
class StudySettings:
    """What the study trains and measures; every candidate gets the same.

    Attributes:
        candidates: pseudo-labels to compare.
        steps: optimizer steps of each pretraining run.
        encoder_dim, context_dim: sizes of the CPC encoder and the LSTM context.
        window, batch_size: training windows (samples) and windows per batch.
        lr, warmup_steps: AdamW peak learning rate and linear warm-up (cosine decay after).
        loss: ``"mse"`` or ``"l1"`` regression loss.
        probe_train_utterances, probe_test_utterances: utterances of the train and dev splits
            the phone probe trains and is scored on.
        probe_epochs, probe_lr: the probe's schedule (Adam).
        estimate_utterances: training utterances the utility is estimated on.
        max_per_class: the estimator's cap on segments per phone.
        seed: the seed of every run, draw and probe.
        threads: torch CPU threads.
    """

    candidates: tuple[str, ...] = CANDIDATES
    steps: int = 300
    encoder_dim: int = 128
    context_dim: int = 128
    window: int = 20480
    batch_size: int = 8
    lr: float = 1e-3
    warmup_steps: int = 30
    loss: str = "mse"
    probe_train_utterances: int = 200
    probe_test_utterances: int = 100
    probe_epochs: int = 20
    probe_lr: float = 2e-3
    estimate_utterances: int = 200
    max_per_class: int = 500
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        self.candidates = tuple(check_names(self.candidates))
        if len(self.candidates) < 3:
            raise ValueError(f"a rank correlation needs at least 3 candidates, got "
                             f"{list(self.candidates)}")
        for name in ("steps", "encoder_dim", "context_dim", "batch_size", "probe_epochs",
                     "probe_train_utterances", "probe_test_utterances", "estimate_utterances",
                     "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"StudySettings.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class CandidateResult:
    """One candidate: its utility estimates, its probe accuracy and its training figures.

    ``final_loss`` is the regression loss (in standard deviations of the pseudo-label) averaged
    over the last five logged training records: how well the pretext task itself was learnt.
    ``train_seconds`` comes from the run's log, so a study continued later reports it too.
    """

    name: str
    hsic_uniform: float
    hsic_weighted: float
    probe_accuracy: float
    final_loss: float
    train_seconds: float


@dataclass
class StudyResult:
    """All candidates, the untrained floor and the rank correlations.

    Attributes:
        rows: one :class:`CandidateResult` per candidate, in the settings' order.
        untrained_accuracy: the probe on the same architecture at initialisation.
        spearman_uniform, spearman_weighted: ``(rho, p)`` between each average of the estimate
            and the probe accuracy (``p``: two-sided, exact permutation test).
    """

    rows: list[CandidateResult]
    untrained_accuracy: float
    spearman_uniform: tuple[float, float]
    spearman_weighted: tuple[float, float]
    settings: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Rank correlation
# --------------------------------------------------------------------------------------------


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their average rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float], max_exact: int = 9,
             permutations: int = 100_000, seed: int = 0) -> tuple[float, float]:
    """Spearman's rho and its two-sided permutation p-value.

    The p-value is the share of permutations of ``y`` whose |rho| reaches the observed one:
    all ``n!`` of them for ``n <= max_exact``, else ``permutations`` random ones.
    """
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size < 3:
        raise ValueError(f"need two sequences of the same length >= 3, got {a.shape}, {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("spearman: the values must be finite")
    ra, rb = _ranks(a) - (a.size + 1) / 2, _ranks(b) - (b.size + 1) / 2
    norm = math.sqrt(float((ra**2).sum() * (rb**2).sum()))
    if norm == 0:
        return float("nan"), float("nan")
    rho = float((ra * rb).sum() / norm)
    if a.size <= max_exact:
        shuffled = np.array(list(itertools.permutations(rb)))
    else:
        rng = np.random.default_rng(seed)
        shuffled = rng.permuted(np.tile(rb, (permutations, 1)), axis=1)
    null = np.abs(shuffled @ ra / norm)
    p = float(np.mean(null >= abs(rho) - 1e-12))
    return rho, p


# --------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------


def compose_run_config(settings: StudySettings, candidate: str, run_dir: Path,
                       corpus_root: Path | None = None, extra: Sequence[str] = ()):
    """The training config of one candidate's run (Hydra's compose API)."""
    from hydra import compose, initialize_config_dir

    from ssl_speech.config import config_dir

    data = ["data=synthetic"] if corpus_root is None else [
        "data=librispeech", f"data.root={corpus_root}",
        f"data.alignments={corpus_root}/alignments.txt", "data.train_split=train",
        "data.dev_split=dev",
    ]
    overrides = [
        *data, "objective=pseudo_label", f"objective.label={candidate}",
        f"objective.loss={settings.loss}", "encoder=cpc", "context=lstm",
        f"encoder.dim={settings.encoder_dim}", f"context.dim={settings.context_dim}",
        f"data.window={settings.window}", f"data.batch_size={settings.batch_size}",
        "optim=adamw", f"optim.optimizer.lr={settings.lr}",
        f"optim.warmup_steps={settings.warmup_steps}",
        f"trainer.max_steps={settings.steps}", f"trainer.checkpoint_every={settings.steps}",
        "trainer.val_every=0", f"trainer.log_every={max(1, min(10, settings.steps // 10))}",
        "trainer.progress=false",
        "trainer.tensorboard=false", "trainer.device=cpu", f"trainer.threads={settings.threads}",
        "probe.enabled=false", f"seed={settings.seed}", f"run_dir={run_dir}",
        f"run_name=pseudo_label-{candidate}", *extra,
    ]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


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
                    alignments: dict[str, np.ndarray], settings: StudySettings) -> float:
    features = {name: extract_corpus_features(model, utts, "context")
                for name, utts in (("train", train), ("test", test))}
    results = train_phone_probe(
        features["train"], {u.id: alignments[u.id] for u in train},
        {"dev": (features["test"], {u.id: alignments[u.id] for u in test})},
        epochs=settings.probe_epochs, lr=settings.probe_lr, seed=settings.seed,
        frame_step=float(model.hop) / SAMPLE_RATE,
    )
    return results["dev"].accuracy


def run_study(out_dir: str | Path, settings: StudySettings | None = None,
              corpus_root: str | Path | None = None, log=print) -> StudyResult:
    """Run (or continue) the study and write ``study.json`` and ``study.md`` to ``out_dir``.

    Args:
        out_dir: where runs, per-candidate results and the summary go.
        settings: what to train and measure (defaults: :class:`StudySettings`).
        corpus_root: a corpus in LibriSpeech layout with ``alignments.txt`` and ``splits/``
            (default: the embedded corpus, generated if needed).
        log: called with progress lines.
    """
    from ssl_speech.data.corpus import load_corpus
    from ssl_speech.data.labels import read_alignments
    from ssl_speech.train import build
    from ssl_speech.train.__main__ import run
    from ssl_speech.train.rng import seed_everything

    settings = settings or StudySettings()
    out = Path(out_dir)
    (out / "results").mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(settings.threads)
    root = Path(corpus_root) if corpus_root is not None else None
    first_cfg = compose_run_config(settings, settings.candidates[0], out / "runs" / "untrained",
                                   root)
    source = build.resolve_data_source(first_cfg.data, progress=False)
    alignments = read_alignments(source.alignments)
    train_corpus: Corpus = load_corpus(root=source.root, split="train")
    dev_corpus: Corpus = load_corpus(root=source.root, split="dev")
    probe_train = pick_utterances(train_corpus, settings.probe_train_utterances, settings.seed)
    probe_test = pick_utterances(dev_corpus, settings.probe_test_utterances, settings.seed + 1)

    log(f"utility estimates of {len(settings.candidates)} candidates on "
        f"{settings.estimate_utterances} training utterances")
    began = time.perf_counter()
    estimates = {e.name: e for e in rank_pseudo_labels(
        pick_utterances(train_corpus, settings.estimate_utterances, settings.seed + 2),
        settings.candidates, task="phone", alignments=alignments,
        max_per_class=settings.max_per_class, seed=settings.seed)}
    log(f"  done in {time.perf_counter() - began:.0f} s")

    seed_everything(settings.seed)
    untrained = build.build_model(first_cfg)
    untrained_accuracy = _probe_accuracy(untrained, probe_train, probe_test, alignments,
                                         settings)
    log(f"untrained model: probe accuracy {100 * untrained_accuracy:.2f} %")

    rows = []
    for name in settings.candidates:
        saved = out / "results" / f"{name}.json"
        if saved.is_file():
            rows.append(CandidateResult(**json.loads(saved.read_text())))
            log(f"{name}: read back from {saved}")
            continue
        run_dir = out / "runs" / name
        result = run(compose_run_config(settings, name, run_dir, root))
        final_loss, seconds = _training_figures(run_dir)
        accuracy = _probe_accuracy(result.model, probe_train, probe_test, alignments, settings)
        row = CandidateResult(
            name=name, hsic_uniform=estimates[name].uniform,
            hsic_weighted=estimates[name].weighted, probe_accuracy=accuracy,
            final_loss=final_loss, train_seconds=seconds,
        )
        saved.write_text(json.dumps(asdict(row), indent=2) + "\n")
        rows.append(row)
        log(f"{name}: HSIC {row.hsic_uniform:.4g}, probe accuracy {100 * accuracy:.2f} % "
            f"(trained in {seconds:.0f} s, final regression loss {row.final_loss:.3f})")

    accuracies = [r.probe_accuracy for r in rows]
    study = StudyResult(
        rows=rows, untrained_accuracy=untrained_accuracy,
        spearman_uniform=spearman([r.hsic_uniform for r in rows], accuracies),
        spearman_weighted=spearman([r.hsic_weighted for r in rows], accuracies),
        settings=asdict(settings),
    )
    (out / "study.json").write_text(json.dumps(asdict(study), indent=2) + "\n")
    (out / "study.md").write_text(format_study(study) + "\n")
    return study


def format_study(study: StudyResult) -> str:
    """A Markdown table of the candidates, the floor and the correlations."""
    lines = [
        "| pseudo-label | HSIC (uniform) | HSIC (weighted) | phone probe acc. (%) | "
        "final train loss | train s |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(study.rows, key=lambda r: r.hsic_uniform):
        lines.append(f"| {r.name} | {r.hsic_uniform:.5f} | {r.hsic_weighted:.5f} | "
                     f"{100 * r.probe_accuracy:.2f} | {r.final_loss:.3f} | {r.train_seconds:.0f} |")
    lines.append(f"| (untrained) | | | {100 * study.untrained_accuracy:.2f} | | |")
    for label, (rho, p) in (("uniform", study.spearman_uniform),
                            ("weighted", study.spearman_weighted)):
        lines.append(f"\nSpearman rho (HSIC {label} vs probe accuracy): {rho:+.3f}, "
                     f"two-sided permutation p = {p:.3f} (n = {len(study.rows)}; the estimator "
                     "predicts rho < 0)")
    return "\n".join(lines)


def main_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
