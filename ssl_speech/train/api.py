"""Training from Python (a notebook, a study, a test): the same run as the command line.

    from ssl_speech.config import compose
    from ssl_speech.train.api import train

    result = train(compose(["objective=cpc", "trainer.max_steps=200"]))
    result.model, result.run_dir, result.probe

``python -m ssl_speech.train`` runs exactly :func:`train` on the config Hydra composes. The
same config finds the same run directory, so calling :func:`train` again resumes the run (or,
if it is complete, only probes it); ``trainer.resume=false`` starts afresh.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ssl_speech.train import build
from ssl_speech.train.distributed import (
    DEFAULT_TIMEOUT_S,
    barrier,
    init_distributed,
    shutdown_distributed,
)
from ssl_speech.train.preemption import PreemptionHandler
from ssl_speech.train.rng import seed_everything


@dataclass
class RunResult:
    """What a run leaves in memory (for notebooks and tests); the run directory has the rest."""

    run_dir: Path
    model: torch.nn.Module
    objective: torch.nn.Module
    step: int
    probe: dict = field(default_factory=dict)


def train(cfg: DictConfig | Mapping[str, Any]) -> RunResult:
    """Train (or resume) the run ``cfg`` describes, then probe it (``probe.enabled``).

    ``cfg``: a composed training config (:func:`ssl_speech.config.compose`). Bad settings
    raise ``ValueError``/``FileNotFoundError`` naming the option, before any data is read
    where the check needs none.
    """
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    trainer_cfg = cfg.trainer
    if trainer_cfg.get("threads"):
        torch.set_num_threads(int(trainer_cfg.threads))
    timeout_s = trainer_cfg.get("collective_timeout_s")
    ctx = init_distributed(str(trainer_cfg.device), timeout_s=float(
        DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s))
    try:
        run_dir = Path(cfg.run_dir)
        progress = bool(trainer_cfg.progress) and ctx.is_main
        parts = build.build_run(cfg, ctx, progress=progress)
        if ctx.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.resolved.yaml").write_text(
                OmegaConf.to_yaml(build.plain_config(cfg)))
            corpus = parts.train_corpus
            n_params = sum(p.numel() for p in parts.params)
            print(f"run {run_dir}: {len(corpus)} training utterances "
                  f"({corpus.total_seconds / 3600:.2f} h), {n_params / 1e6:.2f} M "
                  f"parameters, device {ctx.device}, {ctx.world_size} process(es)",
                  file=sys.stderr)
        # Negatives and dropout differ per rank; the streams are checkpointed per rank.
        torch.manual_seed(int(cfg.seed) * 1000 + ctx.rank + 1)
        trainer = build.build_trainer(cfg, parts, ctx, run_dir)
        trainer.fit(resume=trainer_cfg.resume)
        figures: dict = {}
        if cfg.probe.enabled and ctx.is_main:
            figures = _probe_complete_run(cfg, parts.model, parts.source, progress)
        barrier(ctx, "the end of the run")
        return RunResult(run_dir, parts.model, parts.objective, trainer.step, figures)
    finally:
        shutdown_distributed()


def _probe_complete_run(cfg: DictConfig, model: torch.nn.Module, source: build.DataSource,
                        progress: bool) -> dict:
    """The end-of-run probe; training is complete and saved, so a preemption signal now only
    gets a note (the probe goes on; if the job is killed, the same command probes again)."""
    with PreemptionHandler() as preemption:
        figures = _probe(cfg, model, source, progress)
    if preemption.requested:
        print(f"preemption signal ({preemption.received.name}) during the end-of-run probe: "
              "training was already complete and saved, and the probe has finished",
              file=sys.stderr)
    return figures


def _probe(cfg: DictConfig, model: torch.nn.Module, source: build.DataSource,
           progress: bool) -> dict:
    """Quick linear phone probe of the learned, untrained and log-mel features."""
    from ssl_speech.eval.quick_probe import compare_with_baselines

    if source.alignments is None:
        print("no phone alignments for this corpus (data.alignments): skipping the probe",
              file=sys.stderr)
        return {}
    seed_everything(int(cfg.seed))
    untrained = build.build_model(cfg)
    train_corpus = build.load_split_corpus(source, source.train_split, "skip", 0)
    test_corpus = build.load_split_corpus(source, source.dev_split or source.train_split,
                                          "skip", 0)
    return compare_with_baselines(
        trained=model, untrained=untrained, train_corpus=train_corpus, test_corpus=test_corpus,
        alignments=build.read_labels(source), layer=str(cfg.probe.layer),
        train_utterances=int(cfg.probe.train_utterances),
        test_utterances=int(cfg.probe.test_utterances), epochs=int(cfg.probe.epochs),
        lr=float(cfg.probe.lr), seed=int(cfg.seed), progress=progress,
    )
