"""What the benchmark times: its settings and its cases (lists of training-config overrides)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

PRESETS: dict[str, dict[str, tuple[str, ...]]] = {
    # The CPC_audio default configuration (configs/experiment/cpc_audio.yaml), and aligned CPC
    # (K = 8, M = 12) and linear heads under the same encoder, context, negatives and optimizer.
    "cpc_audio": {
        "cpc_audio": ("experiment=cpc_audio",),
        "cpc_audio-linear": ("experiment=cpc_audio", "objective.head=linear"),
        "acpc": ("experiment=cpc_audio", "objective=acpc", "~objective.num_steps"),
        "acpc-linear": ("experiment=cpc_audio", "objective=acpc", "~objective.num_steps",
                        "objective.head=linear"),
    },
}
PRECISIONS = ("32", "bf16", "16")
OMP_WAIT_POLICIES = ("passive", "active")


@dataclass
class BenchmarkSettings:
    """What to measure and how.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        precision: ``"32"``, ``"bf16"`` (autocast) or ``"16"`` (CUDA, with a gradient scaler).
        batch_size: sequences per step; ``None`` keeps the config's.
        threads: torch CPU threads in every process; ``None`` keeps torch's default.
        compile: run the model and objective through ``torch.compile``.
        warmup: untimed steps per case before the first repeat (compilation happens there).
        repeats: timed rounds; the step time is the median over them.
        steps_per_repeat: steps timed together in one repeat (their mean is the repeat's time).
        retain_freed_memory: on Linux CPU, keep freed memory in the process instead of
            returning it to the system (see :func:`retain_freed_memory`).
        omp_wait_policy: ``OMP_WAIT_POLICY`` of the case processes, ``"passive"`` or
            ``"active"``; ``None`` inherits this process's environment (see
            :func:`worker_environment`).
        data: also time the data pipeline.
        data_batches: batches the data pipeline delivers per repeat.
        matmul_size: side of the square matrices of the throughput probe.
        overrides: Hydra overrides applied to every case (before the case's own).
        profile: also time every phase of the step (``step_phases``); not with ``compile``.
        max_batch_size: search each case's largest batch that fits, doubling from
            ``batch_size`` (or the config's) up to this bound; ``None``: no search.
        memory_headroom: during the search on CUDA, stop doubling once a step's peak memory
            exceeds this fraction of the device's memory (the next doubling would not fit,
            and a compiled step or a fragmented allocator needs some room).
    """

    device: str = "cpu"
    precision: str = "32"
    batch_size: int | None = None
    threads: int | None = None
    compile: bool = False
    warmup: int = 2
    repeats: int = 5
    steps_per_repeat: int = 1
    retain_freed_memory: bool = False
    omp_wait_policy: str | None = None
    data: bool = True
    data_batches: int = 50
    matmul_size: int = 2048
    overrides: tuple[str, ...] = field(default_factory=tuple)
    profile: bool = False
    max_batch_size: int | None = None
    memory_headroom: float = 0.45

    def __post_init__(self) -> None:
        self.precision = str(self.precision)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}: expected one of {PRECISIONS}")
        if self.precision == "16" and not self.device.startswith("cuda"):
            raise ValueError("precision=16 needs a CUDA device; use bf16 on CPU")
        for name in ("warmup", "repeats", "steps_per_repeat", "data_batches", "matmul_size"):
            minimum = 0 if name == "warmup" else 1
            if getattr(self, name) < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {getattr(self, name)}")
        for name in ("batch_size", "threads", "max_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or None for the default), got {value}")
        if self.omp_wait_policy is not None and self.omp_wait_policy not in OMP_WAIT_POLICIES:
            raise ValueError(f"omp_wait_policy={self.omp_wait_policy!r}: expected one of "
                             f"{OMP_WAIT_POLICIES} or None")
        self.overrides = tuple(self.overrides)
        if self.profile and self.compile:
            raise ValueError("profile needs the uncompiled step (its phases are read off "
                             "module hooks, which a compiled graph does not call); drop one")
        if not 0.0 < self.memory_headroom <= 1.0:
            raise ValueError(f"memory_headroom must be in (0, 1], got {self.memory_headroom}")


def cases_for(objectives: list[str], heads: list[str], encoders: list[str],
              contexts: list[str]) -> dict[str, tuple[str, ...]]:
    """Cases named ``objective-head-encoder-context`` for every combination of the choices.

    ``heads`` applies to objectives whose config has a ``head`` (CPC, ACPC, RPC); others get
    one case per encoder and context. Config group names are those of ``configs/``.
    """
    cases: dict[str, tuple[str, ...]] = {}
    for objective in objectives:
        for encoder in encoders:
            for context in contexts:
                base = (f"objective={objective}", f"encoder={encoder}", f"context={context}")
                if _objective_has_head(objective):
                    for head in heads:
                        name = f"{objective}-{head}-{encoder}-{context}"
                        cases[name] = (*base, f"objective.head={head}")
                else:
                    cases[f"{objective}-{encoder}-{context}"] = base
    return cases


def _objective_has_head(objective: str) -> bool:
    from omegaconf import OmegaConf

    from ssl_speech.config import config_dir

    path = os.path.join(config_dir(), "objective", f"{objective}.yaml")
    if not os.path.isfile(path):
        raise ValueError(f"no objective config {objective!r} in {config_dir()}/objective")
    return "head" in OmegaConf.load(path)


# ------------------------------------------------------------------------ host settings
