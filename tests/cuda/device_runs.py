"""Pieces the device tests share: the device under test, device-independent random draws,
tiny configs of every objective, and a few training steps through the public ``Trainer.fit``.

The device under test is ``$SSL_SPEECH_TEST_DEVICE`` (default ``cuda``). The same test bodies
run on ``cpu`` (``scripts/gpu_check.sh --dry-run``), where they compare the CPU with itself:
that proves the harness and the tolerances' plumbing, not the GPU.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from trainer_fixtures import ListSampler

from ssl_speech.config import config_dir
from ssl_speech.data.batch import Batch
from ssl_speech.train import build
from ssl_speech.train.distributed import DistributedContext
from ssl_speech.train.trainer import Trainer, TrainerSettings

DEVICE_ENV = "SSL_SPEECH_TEST_DEVICE"
WINDOW = 3200  # 20 frames of 10 ms
BATCH = 4
TRANSFORMER = ["context.num_heads=2", "context.ffn_dim=64", "context.dropout=0.0"]
SMALL_OBJECTIVE = {
    "cpc": ["objective=cpc", "objective.num_steps=4", "objective.num_negatives=16"],
    "cpc_transformer_head": ["objective=cpc", "objective.num_steps=4",
                             "objective.num_negatives=16", "objective.head=transformer",
                             "objective.head_heads=2", "objective.head_ffn_dim=32"],
    "acpc": ["objective=acpc", "objective.num_predictions=3", "objective.num_matched=5",
             "objective.num_negatives=16"],
    "rpc": ["objective=rpc", "objective.num_steps=4", "objective.num_negatives=16"],
    "mgf": ["objective=mgf", "encoder.n_mels=20", "encoder.hidden=32", "context.num_layers=1",
            *TRANSFORMER, "objective.mask_span=5", "objective.min_unmasked=5",
            "objective.n_mels=20", "objective.frame_hidden=16", "objective.utt_crop=8",
            "objective.utt_gap=2", "objective.utt_hidden=16", "objective.utt_proj_dim=8"],
    "trinet": ["objective=trinet", "context.num_layers=3", *TRANSFORMER, "objective.top_k=2",
               "objective.mask_span=4", "objective.min_unmasked=4", "objective.num_classes=8",
               "objective.momentum.steps=4"],
    "pseudo_label": ["objective=pseudo_label", "objective.label=loudness"],
}
OBJECTIVES = tuple(SMALL_OBJECTIVE)


def device_under_test() -> torch.device:
    """The device of ``$SSL_SPEECH_TEST_DEVICE``; skips the test when it is CUDA and absent."""
    name = os.environ.get(DEVICE_ENV, "cuda")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.skip(f"no CUDA device (set {DEVICE_ENV}=cpu to run this body on the CPU)")
    if device.type not in ("cuda", "cpu"):
        raise ValueError(f"{DEVICE_ENV}={name!r}: expected cuda, cuda:N or cpu")
    return device


def skip_unless_supported(precision: str, device: torch.device) -> None:
    if precision == "16" and device.type != "cuda":
        pytest.skip("fp16 training (with its gradient scaler) is CUDA only")


@contextlib.contextmanager
def cpu_random_draws():
    """Make ``torch.rand``/``randn``/``randint``/``randperm`` without a generator draw on the
    CPU and move the result to the requested device.

    A CUDA run and a CPU run seeded alike then draw the same negatives, masks and crops, so
    their losses differ only by arithmetic. Draws with an explicit generator are left alone.
    """
    originals = {name: getattr(torch, name) for name in ("rand", "randn", "randint", "randperm")}

    def on_cpu(draw):
        def wrapped(*args, generator=None, device=None, **kwargs):
            if generator is not None or device is None or torch.device(device).type == "cpu":
                return draw(*args, generator=generator, device=device, **kwargs)
            return draw(*args, **kwargs).to(device)
        return wrapped

    try:
        for name, draw in originals.items():
            setattr(torch, name, on_cpu(draw))
        yield
    finally:
        for name, draw in originals.items():
            setattr(torch, name, draw)


def voiced_batches(count: int, size: int = BATCH, window: int = WINDOW,
                   seed: int = 0) -> list[Batch]:
    """Harmonic tones (f0 100–250 Hz, eight harmonics) in a little noise: every frame has a
    defined pitch and loudness, so every objective's targets are defined."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(window) / 16000
    batches = []
    for _ in range(count):
        f0 = 100 + 150 * torch.rand(size, 1, generator=g)
        harmonics = torch.arange(1, 9).view(1, 8, 1)
        phase = 2 * math.pi * torch.rand(size, 8, 1, generator=g)
        tone = (torch.sin(2 * math.pi * f0.unsqueeze(-1) * harmonics * t + phase)
                / harmonics).sum(1)
        wav = 0.1 * tone + 0.01 * torch.randn(size, window, generator=g)
        batches.append(Batch(wav=wav.unsqueeze(1).float(),
                             speaker=torch.zeros(size, dtype=torch.long)))
    return batches


def small_config(objective: str, extra: tuple[str, ...] = ()):
    overrides = [*SMALL_OBJECTIVE[objective], "encoder.dim=32", "context.dim=32",
                 f"data.window={WINDOW}", f"data.batch_size={BATCH}", "optim=adamw",
                 "optim.schedule=constant", "optim.warmup_steps=0", "optim.optimizer.lr=3e-3",
                 "probe.enabled=false", "run_dir=unused", "run_name=test", *extra]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def make_trainer(objective: str, precision: str, device: torch.device, run_dir: Path,
                 batches: list[Batch], max_steps: int, **settings) -> Trainer:
    """The objective's tiny model, built on the CPU from seed 0 (so every device starts from
    the same weights), in a trainer on ``device``."""
    cfg = small_config(objective)
    torch.manual_seed(0)
    model = build.build_model(cfg)
    loss = build.build_objective(cfg)
    params = [p for m in (model, loss) for p in m.parameters() if p.requires_grad]
    optimizer, scheduler = build.build_optimizer(cfg, params, max_steps)
    loop = dict(max_steps=max_steps, log_every=1, checkpoint_every=0, progress=False,
                tensorboard=False, diagnostics_every=0, precision=precision,
                grad_clip=float(cfg.trainer.grad_clip))
    return Trainer(model, loss, optimizer, scheduler, batches, ListSampler(WINDOW), run_dir,
                   TrainerSettings(**{**loop, **settings}), ctx=DistributedContext(device=device))


def train(objective: str, precision: str, device: torch.device, run_dir: Path,
          steps: int, resume: str = "false", **settings) -> tuple[Trainer, list[dict]]:
    """Train up to step ``steps`` on one repeated batch; the trainer and the logged training
    records (one per step).

    Every forward pass draws its randomness (on the CPU) from a seed that depends only on the
    number of optimizer updates so far. So a step's loss is a function of the weights alone:
    an fp16 step that the gradient scaler skipped is followed by a step that repeats the same
    forward pass, which is the reference's step after as many updates.
    """
    batches = voiced_batches(1) * steps
    trainer = make_trainer(objective, precision, device, run_dir, batches, steps, **settings)
    scheduler = trainer.scheduler

    def reseed(*_) -> None:
        torch.manual_seed(1000 + scheduler.last_epoch)

    hook = trainer.module.register_forward_pre_hook(reseed)
    try:
        with cpu_random_draws():
            trainer.fit(resume=resume)
    finally:
        hook.remove()
    return trainer, records(run_dir)


def updates_before(rows: list[dict]) -> list[int]:
    """For each logged step, the optimizer updates made before it (skipped steps, counted in
    ``nonfinite_steps``, make none)."""
    out, skipped = [], 0.0
    for step, row in enumerate(rows, start=1):
        out.append(step - 1 - int(skipped))
        skipped = row["nonfinite_steps"]
    return out


def records(run_dir: Path) -> list[dict]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == "train"]
