"""DDP on the device: two ranks, each on half of every batch, end with the weights of one
process trained on the whole batches.

Placement: with two GPUs or more each rank has its own; with one, both ranks share it. NCCL
refuses two ranks on one GPU ("Duplicate GPU detected"), so on a one-GPU machine the NCCL case
is skipped with NCCL's own message and gloo (which takes CUDA tensors) carries DDP across the
shared device; on a CPU only gloo runs.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from device_runs import WINDOW, voiced_batches
from trainer_fixtures import ListSampler, NextFrameRegression

from ssl_speech.data.batch import Batch
from ssl_speech.nn.context import LSTMContext
from ssl_speech.nn.encoders import CPCEncoder
from ssl_speech.nn.model import SSLModel
from ssl_speech.train.distributed import (
    DistributedContext,
    init_distributed,
    shutdown_distributed,
)
from ssl_speech.train.trainer import Trainer, TrainerSettings

pytestmark = pytest.mark.cuda

STEPS = 3
PER_RANK = 2


def fit(ctx: DistributedContext, batches: list[Batch], run_dir: Path) -> torch.Tensor:
    torch.manual_seed(0)
    model, objective = SSLModel(CPCEncoder(dim=16), LSTMContext(16, 16)), NextFrameRegression(16)
    params = list(model.parameters()) + list(objective.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    settings = TrainerSettings(max_steps=STEPS, log_every=1, checkpoint_every=0, progress=False,
                               tensorboard=False, diagnostics_every=0)
    trainer = Trainer(model, objective, optimizer, scheduler, batches, ListSampler(WINDOW), run_dir,
                      settings, ctx=ctx)
    trainer.fit(resume=False)
    return torch.cat([p.detach().reshape(-1) for p in trainer.params]).cpu()


def rank_device(device: torch.device, rank: int) -> str:
    if device.type == "cuda":
        return f"cuda:{rank}" if torch.cuda.device_count() >= 2 else "cuda:0"
    return "cpu"


def _rank(rank: int, port: int, device: str, backend: str, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ctx = init_distributed(rank_device(torch.device(device), rank), backend=backend)
    try:
        half = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        mine = [Batch(wav=b.wav[half], speaker=b.speaker[half]) for b in whole_batches()]
        weights = fit(ctx, mine, Path(tmp) / "ddp")
        torch.save(weights, Path(tmp) / f"rank{rank}.pt")
    finally:
        shutdown_distributed()


def whole_batches() -> list[Batch]:
    return voiced_batches(STEPS, size=2 * PER_RANK, window=WINDOW, seed=3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["nccl", "gloo"])
def test_two_ranks_equal_one_process_with_the_whole_batch(backend, device, no_tf32, tmp_path):
    if backend == "nccl" and device.type != "cuda":
        pytest.skip("NCCL needs CUDA")
    try:
        mp.spawn(_rank, args=(free_port(), str(device), backend, str(tmp_path)), nprocs=2,
                 join=True)
    except mp.ProcessRaisedException as error:
        if backend == "nccl" and "Duplicate GPU" in str(error):
            pytest.skip("NCCL refuses two ranks on one GPU: " + str(error).splitlines()[-1])
        raise
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert torch.equal(rank0, rank1), "the ranks' weights diverged"
    single = fit(DistributedContext(device=torch.device(rank_device(device, 0))),
                 whole_batches(), tmp_path / "single")
    assert not torch.equal(single, fit_start()), "training did not move the weights"
    torch.testing.assert_close(rank0, single, rtol=1e-4, atol=1e-5)


def fit_start() -> torch.Tensor:
    torch.manual_seed(0)
    model, objective = SSLModel(CPCEncoder(dim=16), LSTMContext(16, 16)), NextFrameRegression(16)
    return torch.cat([p.detach().reshape(-1) for m in (model, objective)
                      for p in m.parameters()])
