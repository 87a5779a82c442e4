"""Process-group set-up and the few collectives the trainer needs.

Rank and world size come from the environment torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``); multi-node jobs use torchrun's rendezvous. Backend: NCCL on CUDA, gloo on CPU.
Only rank 0 prints, logs and writes; every rank runs the collectives in the same order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA (the local rank's GPU) when present, else CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("trainer.device=cuda but no CUDA device is visible; use auto or cpu")
        return torch.device("cuda", local_rank)
    if device not in ("cpu",) and not device.startswith("cuda:"):
        raise ValueError(f"trainer.device={device!r}: expected auto, cpu, cuda or cuda:N")
    return torch.device(device)


def _export_submitit_environment() -> None:
    """Under Hydra's submitit launcher (one SLURM task per GPU, no torchrun) the ranks come from
    SLURM; submitit knows how to turn them into torch's ``env://`` variables."""
    if "WORLD_SIZE" in os.environ or not os.environ.get("SUBMITIT_EXECUTOR"):
        return
    try:
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError:
        return
    TorchDistributedEnvironment().export()


def init_distributed(device: str = "auto", backend: str = "auto") -> DistributedContext:
    """Join the process group if launched by torchrun (or submitit), else a single process."""
    _export_submitit_environment()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if backend == "auto":
            backend = "nccl" if resolved.type == "cuda" else "gloo"
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistributedContext(rank, world_size, local_rank, resolved)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(values: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """Mean of a tensor over ranks (identity on one process)."""
    if not ctx.enabled:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / ctx.world_size


def any_rank(flag: bool, ctx: DistributedContext) -> bool:
    """True on every rank if ``flag`` is true on at least one (e.g. a preemption signal)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(ctx: DistributedContext) -> None:
    if ctx.enabled:
        dist.barrier()
