"""Small pieces for driving the Trainer directly: a deterministic objective, fixed batches."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ssl_speech.data.batch import Batch
from ssl_speech.nn.context import LSTMContext
from ssl_speech.nn.encoders import CPCEncoder
from ssl_speech.nn.model import SSLModel
from ssl_speech.objectives.base import Objective, ObjectiveOutput
from ssl_speech.train.distributed import DistributedContext
from ssl_speech.train.trainer import Trainer, TrainerSettings

WINDOW = 1600  # 10 frames


class NextFrameRegression(Objective):
    """A deterministic objective (no sampling), so runs can be compared exactly."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)

    def forward(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        z, c = model(batch.wav)
        loss = (self.proj(c[:, :-1]) - z[:, 1:].detach()).pow(2).mean()
        return ObjectiveOutput(loss, {"mse": loss.detach()})


class ListSampler:
    """The sampler interface the trainer needs, over a fixed list of batches."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window  # samples per window: the trainer's audio-seconds figure
        self.epoch, self.position = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self, consumed_batches: int | None = None) -> dict:
        return {"epoch": self.epoch, "position": consumed_batches or 0}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = state["epoch"], state["position"]


def make_batches(count: int, size: int, seed: int = 123) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    return [Batch(wav=torch.randn(size, 1, WINDOW, generator=g),
                  speaker=torch.zeros(size, dtype=torch.long)) for _ in range(count)]


def split(batch: Batch, parts: int, index: int) -> Batch:
    n = batch.size // parts
    return Batch(wav=batch.wav[index * n:(index + 1) * n],
                 speaker=batch.speaker[index * n:(index + 1) * n])


def tiny_model(seed: int = 0) -> tuple[SSLModel, NextFrameRegression]:
    torch.manual_seed(seed)
    return SSLModel(CPCEncoder(dim=16), LSTMContext(16, 16)), NextFrameRegression(16)


def make_trainer(run_dir: Path, batches: list[Batch], ctx: DistributedContext | None = None,
                 **settings) -> Trainer:
    model, objective = tiny_model()
    params = list(model.parameters()) + list(objective.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    defaults = dict(max_steps=3, log_every=1, checkpoint_every=0, progress=False,
                    tensorboard=False)
    return Trainer(model, objective, optimizer, scheduler, batches, ListSampler(), run_dir,
                   TrainerSettings(**{**defaults, **settings}), ctx=ctx)


def flat_parameters(trainer: Trainer) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in trainer.params])
