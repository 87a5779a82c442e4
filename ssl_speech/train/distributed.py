"""Process-group set-up and the few collectives the trainer needs.

Rank and world size come from the environment torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``); multi-node jobs use torchrun's rendezvous. Backend: NCCL on CUDA, gloo on CPU.
Only rank 0 prints, logs and writes; every rank runs the collectives in the same order.

A rank that dies or hangs leaves the others waiting in a collective: each waits at most
``trainer.collective_timeout_s`` seconds (the process group's timeout), then stops with a
:class:`CollectiveError` naming its rank and the collective.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ssl_speech.train.errors import CollectiveError

DEFAULT_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    timeout_s: float = DEFAULT_TIMEOUT_S

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
            raise ValueError("trainer.device=cuda but no CUDA device is visible; use auto or cpu")
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


def init_distributed(device: str = "auto", backend: str = "auto",
                     timeout_s: float = DEFAULT_TIMEOUT_S) -> DistributedContext:
    """Join the process group if launched by torchrun (or submitit), else a single process.

    ``timeout_s``: how long a collective waits for the other ranks before it fails.
    """
    if not timeout_s > 0:
        raise ValueError(f"trainer.collective_timeout_s={timeout_s}: must be > 0 seconds")
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
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    return DistributedContext(rank, world_size, local_rank, resolved, timeout_s)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# How a failed collective shows inside computation (e.g. DDP's gradient all-reduce during
# backward): a plain RuntimeError from the backend, named by its text.
_BACKEND_MARKERS = ("gloo", "NCCL", "ProcessGroup", "Connection closed", "Connection reset",
                    "Timed out", "timed out")


def _is_collective_failure(error: BaseException, computing: bool) -> bool:
    if isinstance(error, dist.DistError):
        return True
    if not isinstance(error, RuntimeError):
        return False
    return not computing or any(marker in str(error) for marker in _BACKEND_MARKERS)


@contextlib.contextmanager
def collective(what: str, ctx: DistributedContext, computing: bool = False) -> Iterator[None]:
    """Turn a failed or timed-out collective into a :class:`CollectiveError` naming the rank.

    ``computing``: the block also computes (a training step), so only errors from torch's
    distributed backend are converted; a model's own ``RuntimeError`` keeps its name.
    """
    if not ctx.enabled:
        yield
        return
    try:
        yield
    except RuntimeError as error:
        if isinstance(error, CollectiveError) or not _is_collective_failure(error, computing):
            raise
        raise CollectiveError(
            f"rank {ctx.rank} of {ctx.world_size}: {what} failed or waited more than "
            f"trainer.collective_timeout_s={ctx.timeout_s:g} s for the other ranks; another "
            f"rank probably died or hung (see its log above). {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}") from error


def all_reduce_mean(values: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """Mean of a tensor over ranks (identity on one process)."""
    if not ctx.enabled:
        return values
    values = values.clone()
    with collective("the metrics all-reduce", ctx):
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / ctx.world_size


def gather_objects(obj: Any, ctx: DistributedContext) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order: ``[obj]`` on one process."""
    if not ctx.enabled:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    with collective("gathering the random states for a checkpoint", ctx):
        dist.all_gather_object(gathered, obj)
    return gathered


def any_rank(flag: bool, ctx: DistributedContext) -> bool:
    """True on every rank if ``flag`` is true on at least one (e.g. a preemption signal)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    with collective("the preemption check", ctx):
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(ctx: DistributedContext, what: str = "a barrier") -> None:
    if ctx.enabled:
        with collective(what, ctx):
            dist.barrier()
