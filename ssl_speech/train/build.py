"""Build a run's parts from its resolved config: the one place that reads the config tree.

:func:`build_run` checks the cheap settings first (trainer loop, device, data sizes), so a typo
fails before the corpus scan; then it resolves the data source (the embedded corpus is
generated and cached on first use), builds model, objective, loaders, optimizer and schedule
in a fixed order (the order the random streams see), and :func:`build_trainer` puts them in a
:class:`~ssl_speech.train.trainer.Trainer`. The training entry point and the benchmark both
build through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ssl_speech.data.corpus import Corpus
from ssl_speech.data.source import (  # noqa: F401 (callers' names)
    DataSource,
    load_split_corpus,
    read_labels,
    resolve_data_source,
)
from ssl_speech.data.windows import SpeakerBatchSampler, build_dataloader
from ssl_speech.nn.model import SSLModel
from ssl_speech.train.distributed import DistributedContext, barrier
from ssl_speech.train.rng import seed_everything
from ssl_speech.train.schedule import build_scheduler
from ssl_speech.train.settings import TrainerSettings
from ssl_speech.train.trainer import Trainer


def build_loader(corpus: Corpus, data: DictConfig, seed: int, rank: int, world_size: int,
                 labels: dict | None = None, shuffle_mode: str | None = None,
                 hop: int = 160) -> tuple[torch.utils.data.DataLoader, SpeakerBatchSampler]:
    """The training loader the ``data`` config describes, and its (resumable) batch sampler."""
    loader = build_dataloader(
        corpus, window=int(data.window), batch_size=int(data.batch_size),
        mode=shuffle_mode or data.sampler, seed=seed, rank=rank, world_size=world_size,
        labels=labels, num_workers=int(data.num_workers), in_memory=bool(data.in_memory),
        hop=hop, pin_memory=data.get("pin_memory"),
        prefetch_factor=int(data.get("prefetch_factor") or 2), on_error=str(data.on_error),
    )
    return loader, loader.batch_sampler


def build_model(cfg: DictConfig) -> SSLModel:
    """The model ``cfg`` describes; it keeps its (plain) encoder and context config, so it
    can be saved with ``save_pretrained`` without a checkpoint."""
    model = SSLModel(instantiate(cfg.encoder), instantiate(cfg.context))
    model.config = {key: OmegaConf.to_container(cfg[key], resolve=True)
                    for key in ("encoder", "context")}
    return model


def build_objective(cfg: DictConfig) -> torch.nn.Module:
    return instantiate(cfg.objective)


def build_optimizer(cfg: DictConfig, params: list[torch.nn.Parameter], max_steps: int,
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    optim = cfg.optim
    optimizer = instantiate(optim.optimizer, params=params)
    scheduler = build_scheduler(optimizer, kind=optim.schedule,
                                warmup_steps=int(optim.warmup_steps), total_steps=max_steps,
                                min_ratio=float(optim.min_lr_ratio))
    return optimizer, scheduler


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain containers (stored in checkpoints and the run dir)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore


def trainer_settings(cfg: DictConfig) -> TrainerSettings:
    """The ``trainer`` group as :class:`TrainerSettings` (every key checked, no data read)."""
    return TrainerSettings.from_config(OmegaConf.to_container(cfg.trainer, resolve=True))


def check_data_sizes(data: DictConfig) -> None:
    """The data settings that need no corpus: whole numbers in range, named when wrong."""
    for key, least in (("window", 1), ("batch_size", 1), ("num_workers", 0)):
        value = data.get(key)
        try:
            number = int(value)
            ok = number == value and number >= least
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"data.{key}={value!r}: expected a whole number >= {least}")


@dataclass
class RunParts:
    """Everything a run trains with; the data parts are ``None`` when built without data."""

    model: SSLModel
    objective: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    settings: TrainerSettings
    params: list[torch.nn.Parameter]
    source: DataSource | None = None
    train_corpus: Corpus | None = None
    train_loader: torch.utils.data.DataLoader | None = None
    sampler: SpeakerBatchSampler | None = None
    val_loader: torch.utils.data.DataLoader | None = None


def build_run(cfg: DictConfig, ctx: DistributedContext | None = None, data: bool = True,
              progress: bool = False) -> RunParts:
    """The parts of the run ``cfg`` describes, for the process ``ctx`` (default: one CPU).

    ``data=False`` builds no corpus or loader (the benchmark times steps on its own batches).
    With ``data``, rank 0 resolves the source first (generating the embedded corpus if
    needed) while the other ranks wait, then find it cached.
    """
    ctx = ctx or DistributedContext()
    settings = trainer_settings(cfg)
    settings.check_device(ctx.device)
    check_data_sizes(cfg.data)
    source = None
    if data:
        if ctx.is_main:
            source = resolve_data_source(cfg.data, progress=progress)
        barrier(ctx, "waiting for rank 0 to prepare the corpus")
        if not ctx.is_main:
            source = resolve_data_source(cfg.data, progress=False)

    seed = int(cfg.seed)
    seed_everything(seed)  # identical initial weights on every rank
    model = build_model(cfg)
    objective = build_objective(cfg)
    parts: dict[str, Any] = {}
    if source is not None:
        hop = int(model.hop)
        on_error = str(cfg.data.on_error)
        window = int(cfg.data.window)
        scan = dict(threads=int(cfg.data.get("scan_threads") or 8),
                    cache=bool(cfg.data.get("manifest_cache", False)), rank=ctx.rank,
                    barrier=(lambda: barrier(ctx, "waiting for rank 0 to scan the corpus"))
                    if ctx.world_size > 1 else None)
        train_corpus = load_split_corpus(source, source.train_split, on_error,
                                         min_samples=window, **scan)
        # frame labels ride along only when asked for (objectives that train on them)
        labels = read_labels(source) if cfg.data.get("frame_labels", False) else None
        train_loader, sampler = build_loader(train_corpus, cfg.data, seed, ctx.rank,
                                             ctx.world_size, labels=labels, hop=hop)
        val_loader = None
        if source.dev_split is not None and settings.val_every > 0:
            dev_corpus = load_split_corpus(source, source.dev_split, on_error,
                                           min_samples=window, **scan)
            val_loader, _ = build_loader(dev_corpus, cfg.data, seed + 1, ctx.rank,
                                         ctx.world_size, hop=hop)
        parts = dict(source=source, train_corpus=train_corpus, train_loader=train_loader,
                     sampler=sampler, val_loader=val_loader)
    params = [p for m in (model, objective) for p in m.parameters() if p.requires_grad]
    optimizer, scheduler = build_optimizer(cfg, params, settings.max_steps)
    return RunParts(model, objective, optimizer, scheduler, settings, params, **parts)


def build_trainer(cfg: DictConfig, parts: RunParts, ctx: DistributedContext | None = None,
                  run_dir: str | Path | None = None) -> Trainer:
    """The trainer of ``parts`` in ``run_dir`` (default: ``cfg.run_dir``), keeping the
    resolved config for its checkpoints."""
    return Trainer(parts.model, parts.objective, parts.optimizer, parts.scheduler,
                   parts.train_loader, parts.sampler, run_dir or cfg.run_dir, parts.settings,
                   ctx=ctx, val_loader=parts.val_loader, config=plain_config(cfg),
                   seed=int(cfg.seed))
