"""Build a run's parts from its resolved config: the one place that reads the config tree.

Encoders, contexts and objectives are instantiated from their ``_target_``; data sources are
resolved to a corpus root (the embedded corpus is generated and cached on first use).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ssl_speech.data.corpus import Corpus, load_corpus
from ssl_speech.data.labels import read_alignments
from ssl_speech.data.windows import SpeakerBatchSampler, WindowDataset, collate_windows
from ssl_speech.nn.model import SSLModel
from ssl_speech.train.schedule import build_scheduler


@dataclass
class DataSource:
    """Where a corpus lives and its optional labels and split lists."""

    root: Path | None
    manifest: Path | None
    alignments: Path | None
    train_split: str | Path | None
    dev_split: str | Path | None


def resolve_data_source(data: DictConfig, progress: bool = True) -> DataSource:
    """Resolve ``data.source`` (synthetic, librispeech, manifest) to paths; generate if needed."""
    source = data.source
    if source == "synthetic":
        from ssl_speech.data.synthetic import SyntheticCorpusSpec, ensure_corpus

        spec = SyntheticCorpusSpec(seed=int(data.synthetic.seed), hours=float(data.synthetic.hours))
        root = ensure_corpus(spec, cache_dir=data.synthetic.cache_dir, progress=progress)
        return DataSource(root, None, root / "alignments.txt", data.train_split, data.dev_split)
    if source in ("librispeech", "manifest"):
        root = Path(data.root).expanduser() if data.get("root") else None
        manifest = Path(data.manifest).expanduser() if data.get("manifest") else None
        if source == "librispeech" and root is None:
            raise ValueError("data=librispeech needs data.root=/path/to/LibriSpeech/train-clean")
        if source == "manifest" and manifest is None:
            raise ValueError("data=manifest needs data.manifest=/path/to/train.tsv")
        alignments = Path(data.alignments).expanduser() if data.get("alignments") else None
        return DataSource(root, manifest, alignments, data.get("train_split"),
                          data.get("dev_split"))
    raise ValueError(f"data.source={source!r}: expected synthetic, librispeech or manifest")


def load_split_corpus(source: DataSource, split: str | Path | None, on_error: str,
                      min_samples: int) -> Corpus:
    return load_corpus(root=source.root, manifest=source.manifest, split=split,
                       on_error=on_error, min_samples=min_samples)


def build_loader(corpus: Corpus, data: DictConfig, seed: int, rank: int, world_size: int,
                 labels: dict | None = None, shuffle_mode: str | None = None,
                 hop: int = 160) -> tuple[torch.utils.data.DataLoader, SpeakerBatchSampler]:
    sampler = SpeakerBatchSampler(
        corpus, window=int(data.window), batch_size=int(data.batch_size),
        mode=shuffle_mode or data.sampler, seed=seed, rank=rank, world_size=world_size,
        hop=hop,
    )
    dataset = WindowDataset(corpus, window=int(data.window), labels=labels,
                            in_memory=bool(data.in_memory), hop=hop)
    workers = int(data.num_workers)
    # The loader's own generator: creating an iterator must not draw from the global stream
    # that negatives and dropout use, or a resumed run would diverge from an uninterrupted one.
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate_windows, num_workers=workers,
        pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
        generator=generator,
    )
    return loader, sampler


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


def read_labels(source: DataSource) -> dict | None:
    if source.alignments is None or not Path(source.alignments).is_file():
        return None
    return read_alignments(source.alignments)
