"""The trainer's generic objective hooks: ``after_optimizer_step`` after every update that
happened, and ``extra_state``/``load_extra_state`` through a checkpoint and a resume."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from trainer_fixtures import ListSampler, NextFrameRegression, make_batches

from ssl_speech.data.batch import Batch
from ssl_speech.nn.context import LSTMContext
from ssl_speech.nn.encoders import CPCEncoder
from ssl_speech.nn.model import SSLModel
from ssl_speech.train.trainer import Trainer, TrainerSettings


class HookedObjective(NextFrameRegression):
    """Records each post-step call with the optimizer's update count at that moment."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.calls: list[tuple[int, int]] = []
        self.updates_seen = 0
        self.restored: dict | None = None
        self.optimizer: torch.optim.Optimizer | None = None

    def after_optimizer_step(self, model: nn.Module, step: int) -> None:
        assert isinstance(model, SSLModel)  # the model itself, never a DDP wrapper
        state = self.optimizer.state[self.proj.weight] if self.optimizer else {}
        self.calls.append((step, int(state["step"]) if "step" in state else 0))

    def extra_state(self) -> dict:
        return {"calls": len(self.calls), "last": self.calls[-1][0] if self.calls else None}

    def load_extra_state(self, state: dict) -> None:
        self.restored = dict(state)


def hooked_trainer(run_dir: Path, batches: list[Batch], **settings) -> Trainer:
    torch.manual_seed(0)
    model = SSLModel(CPCEncoder(dim=16), LSTMContext(16, 16))
    objective = HookedObjective(16)
    params = [*model.parameters(), *objective.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    objective.optimizer = optimizer
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    options = dict(max_steps=4, log_every=1, checkpoint_every=2, progress=False,
                   tensorboard=False)
    return Trainer(model, objective, optimizer, scheduler, batches, ListSampler(), run_dir,
                   TrainerSettings(**{**options, **settings}))


def test_post_step_hook_follows_every_update_and_skips_skipped_steps(tmp_path):
    batches = make_batches(4, 2)
    batches[2].wav[0, 0, 10] = float("nan")  # step 3 is skipped: no update, no hook
    trainer = hooked_trainer(tmp_path, batches, checkpoint_every=0)
    trainer.fit(resume=False)
    # (trainer step, Adam's update count when the hook ran): after the update, not before.
    assert trainer.objective.calls == [(1, 1), (2, 2), (4, 3)]


def test_extra_state_is_checkpointed_and_handed_back_on_resume(tmp_path):
    batches = make_batches(4, 2)
    first = hooked_trainer(tmp_path, batches, max_steps=2)
    first.fit(resume=False)
    resumed = hooked_trainer(tmp_path, batches, max_steps=4)
    resumed.fit(resume="auto")
    assert resumed.objective.restored == {"calls": 2, "last": 2}
    assert resumed.objective.calls == [(3, 3), (4, 4)]
    assert resumed.state_dict()["objective_extra"] == {"calls": 2, "last": 4}
