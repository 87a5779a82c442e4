"""Hydra entry point: ``python -m ssl_speech.train [group=option ...] [key=value ...]``.

Also under torchrun: ``torchrun --nproc_per_node=N -m ssl_speech.train ...``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from ssl_speech.config import config_dir
from ssl_speech.train import build
from ssl_speech.train.distributed import barrier, init_distributed, shutdown_distributed
from ssl_speech.train.rng import seed_everything
from ssl_speech.train.trainer import Trainer, TrainerSettings

_LOOP_KEYS = ("device", "threads", "resume")


@dataclass
class RunResult:
    """What a run leaves in memory (for notebooks and tests); the run directory has the rest."""

    run_dir: Path
    model: torch.nn.Module
    objective: torch.nn.Module
    step: int
    probe: dict = field(default_factory=dict)


def run(cfg: DictConfig) -> RunResult:
    """Train (or resume) the run ``cfg`` describes, then probe it."""
    trainer_cfg = cfg.trainer
    if trainer_cfg.get("threads"):
        torch.set_num_threads(int(trainer_cfg.threads))
    ctx = init_distributed(trainer_cfg.device)
    try:
        run_dir = Path(cfg.run_dir)
        progress = bool(trainer_cfg.progress) and ctx.is_main
        # Rank 0 generates the embedded corpus if needed; the others wait, then find it cached.
        if ctx.is_main:
            source = build.resolve_data_source(cfg.data, progress=progress)
        barrier(ctx)
        if not ctx.is_main:
            source = build.resolve_data_source(cfg.data, progress=False)

        seed_everything(int(cfg.seed))  # identical initial weights on every rank
        model = build.build_model(cfg)
        objective = build.build_objective(cfg)
        hop = int(model.hop)
        on_error = str(cfg.data.on_error)
        train_corpus = build.load_split_corpus(source, source.train_split, on_error,
                                               min_samples=int(cfg.data.window))
        train_loader, sampler = build.build_loader(train_corpus, cfg.data, int(cfg.seed),
                                                   ctx.rank, ctx.world_size, hop=hop)
        val_loader = None
        if source.dev_split is not None and int(trainer_cfg.val_every) > 0:
            dev_corpus = build.load_split_corpus(source, source.dev_split, on_error,
                                                 min_samples=int(cfg.data.window))
            val_loader, _ = build.build_loader(dev_corpus, cfg.data, int(cfg.seed) + 1,
                                               ctx.rank, ctx.world_size, hop=hop)
        params = [p for m in (model, objective) for p in m.parameters() if p.requires_grad]
        optimizer, scheduler = build.build_optimizer(cfg, params, int(trainer_cfg.max_steps))
        settings = TrainerSettings(**{k: v for k, v in trainer_cfg.items()
                                      if k not in _LOOP_KEYS})
        plain = build.plain_config(cfg)
        if ctx.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.resolved.yaml").write_text(OmegaConf.to_yaml(plain))
            n_params = sum(p.numel() for p in params)
            print(f"run {run_dir}: {len(train_corpus)} training utterances "
                  f"({train_corpus.total_seconds / 3600:.2f} h), {n_params / 1e6:.2f} M "
                  f"parameters, device {ctx.device}, {ctx.world_size} process(es)",
                  file=sys.stderr)
        # Negatives and dropout differ per rank; the streams are checkpointed per rank.
        torch.manual_seed(int(cfg.seed) * 1000 + ctx.rank + 1)
        trainer = Trainer(model, objective, optimizer, scheduler, train_loader, sampler,
                          run_dir, settings, ctx=ctx, val_loader=val_loader, config=plain,
                          seed=int(cfg.seed))
        trainer.fit(resume=trainer_cfg.resume)
        figures: dict = {}
        if cfg.probe.enabled and ctx.is_main:
            figures = _probe(cfg, model, source, progress)
        barrier(ctx)
        return RunResult(run_dir, model, objective, trainer.step, figures)
    finally:
        shutdown_distributed()


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


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    main()
