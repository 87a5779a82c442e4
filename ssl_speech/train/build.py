"""Build a run's parts from its resolved config: the one place that reads the config tree.

Encoders, contexts and objectives are instantiated from their ``_target_``; data sources are
resolved to a corpus root (the embedded corpus is generated and cached on first use).
"""

from __future__ import annotations

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
from ssl_speech.train.schedule import build_scheduler


def build_loader(corpus: Corpus, data: DictConfig, seed: int, rank: int, world_size: int,
                 labels: dict | None = None, shuffle_mode: str | None = None,
                 hop: int = 160) -> tuple[torch.utils.data.DataLoader, SpeakerBatchSampler]:
    """The training loader the ``data`` config describes, and its (resumable) batch sampler."""
    loader = build_dataloader(
        corpus, window=int(data.window), batch_size=int(data.batch_size),
        mode=shuffle_mode or data.sampler, seed=seed, rank=rank, world_size=world_size,
        labels=labels, num_workers=int(data.num_workers), in_memory=bool(data.in_memory),
        hop=hop,
    )
    return loader, loader.batch_sampler


def build_model(cfg: DictConfig) -> SSLModel:
    return SSLModel(instantiate(cfg.encoder), instantiate(cfg.context))


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
