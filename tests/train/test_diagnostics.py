"""Collapse diagnostics: the metrics' values, the frame buffer, and the trainer's guard."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from ssl_speech.data.batch import Batch
from ssl_speech.nn.context import LSTMContext
from ssl_speech.nn.encoders import CPCEncoder
from ssl_speech.nn.model import SSLModel
from ssl_speech.objectives.base import Objective, ObjectiveOutput
from ssl_speech.train.diagnostics import (
    CollapseThresholds,
    FrameBuffer,
    collapse_metrics,
    effective_rank,
    mean_std,
    usage_entropy,
)
from ssl_speech.train.trainer import Trainer, TrainerSettings, TrainingStoppedError


def equal_singular_values(n: int, d: int, rank: int, value: float = 3.0) -> torch.Tensor:
    """An ``(n, d)`` matrix with exactly ``rank`` non-zero singular values, all ``value``."""
    g = torch.Generator().manual_seed(rank)
    u, _ = torch.linalg.qr(torch.randn(n, rank, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, rank, generator=g, dtype=torch.float64))
    return (value * u @ v.T).float()


@pytest.mark.parametrize("rank", [1, 2, 5, 17, 32])
def test_effective_rank_of_equal_singular_values_is_the_rank(rank):
    x = equal_singular_values(500, 32, rank)
    assert float(effective_rank(x)) == pytest.approx(rank, rel=1e-3)


def test_effective_rank_falls_with_unequal_singular_values_and_scale_does_not_matter():
    u, _ = torch.linalg.qr(torch.randn(200, 4, dtype=torch.float64))
    sigma = torch.tensor([8.0, 4.0, 2.0, 1.0], dtype=torch.float64)
    x = (u * sigma).float()
    p = sigma / sigma.sum()
    expected = math.exp(-float((p * p.log()).sum()))
    assert float(effective_rank(x)) == pytest.approx(expected, rel=1e-4)
    assert 1.0 < expected < 4.0
    assert float(effective_rank(10 * x)) == pytest.approx(expected, rel=1e-4)


def test_collapsed_frames_have_rank_one_and_zero_std():
    frame = torch.randn(16)
    constant = frame.expand(300, 16).clone()
    assert float(effective_rank(constant)) == pytest.approx(1.0, abs=1e-3)
    assert float(mean_std(constant)) == pytest.approx(0.0, abs=1e-6)
    assert float(effective_rank(torch.zeros(10, 4))) == 0.0
    # Centring removes the shared vector: random frames around it keep a high rank.
    noisy = constant + 0.01 * torch.randn(300, 16)
    assert float(effective_rank(noisy)) < 1.5
    assert float(effective_rank(noisy, center=True)) > 12


def test_mean_std_is_the_average_per_dimension_spread():
    x = torch.randn(20000, 3) * torch.tensor([1.0, 2.0, 3.0])
    assert float(mean_std(x)) == pytest.approx(2.0, rel=0.02)


def test_usage_entropy():
    uniform = torch.arange(32).repeat(10)
    assert float(usage_entropy(uniform)) == pytest.approx(math.log(32), rel=1e-6)
    assert float(usage_entropy(torch.full((50,), 7))) == pytest.approx(0.0, abs=1e-7)
    half = torch.tensor([0] * 30 + [1] * 10)
    assert float(usage_entropy(half)) == pytest.approx(
        -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), rel=1e-6)
    with pytest.raises(ValueError, match="integer classes"):
        usage_entropy(torch.rand(5))


def test_collapse_metrics_names_and_kinds():
    metrics = collapse_metrics({"predictions": torch.randn(64, 8),
                                "classes": torch.randint(0, 4, (64,))})
    assert set(metrics) == {"predictions/std", "predictions/effective_rank",
                            "classes/usage_entropy"}
    with pytest.raises(ValueError, match=r"\(N, dim\)"):
        collapse_metrics({"bad": torch.randn(2, 3, 4)})


def test_frame_buffer_keeps_the_newest_frames():
    buffer = FrameBuffer(max_frames=10)
    for i in range(5):
        buffer.add({"x": torch.full((4, 2), float(i)), "k": torch.full((4,), i)})
    taken = buffer.take()
    assert taken["x"].shape == (10, 2) and taken["k"].shape == (10,)
    assert taken["x"][:, 0].tolist() == [2.0, 2.0, 3, 3, 3, 3, 4, 4, 4, 4]
    assert len(buffer) == 0 and buffer.take() == {}
    with pytest.raises(ValueError, match="integer"):
        buffer.add({"k": torch.zeros(3, 2, dtype=torch.long)})


def test_thresholds_message_names_metric_value_threshold_and_step():
    thresholds = CollapseThresholds(min_effective_rank=4, min_std=None)
    ok = {"diag/predictions/effective_rank": 12.0, "diag/predictions/std": 0.0}
    assert thresholds.violation(ok, 10) is None  # min_std is off
    bad = {"diag/predictions/effective_rank": 1.3}
    message = thresholds.violation(bad, 5200)
    assert message.startswith("collapse: effective rank 1.3 < 4 at step 5200")
    assert "predictions" in message and "trainer.collapse.min_effective_rank" in message
    entropy = CollapseThresholds(min_usage_entropy=1.0).violation(
        {"pseudo_classes/usage_entropy": 0.2}, 3)
    assert entropy.startswith("collapse: class usage entropy 0.2 < 1 at step 3")
    with pytest.raises(ValueError, match="unknown keys"):
        CollapseThresholds.from_mapping({"min_rank": 3})
    with pytest.raises(ValueError, match="diagnostics_every"):
        TrainerSettings(collapse={"min_std": 0.1}, diagnostics_every=0)


# ------------------------------------------------------------------ the trainer's guard
WINDOW = 1600  # 10 frames


class ListSampler:
    window = WINDOW

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self, consumed_batches: int | None = None) -> dict:
        return {"position": consumed_batches or 0}

    def load_state_dict(self, state: dict) -> None:
        pass


class CollapsedModel(nn.Module):
    """Planted collapse: every frame of every input is the same learned vector."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.frame = nn.Parameter(torch.randn(dim))
        self.hop = 160

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = wav.shape[0], wav.shape[-1] // self.hop
        z = self.frame.expand(B, T, -1) + 0 * wav.mean()
        return z, z


class MatchFrames(Objective):
    """Pulls the context towards a projection of the latents (collapse stays a solution)."""

    def __init__(self, dim: int = 16, features: bool = False) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.features = features
        self._last: dict[str, torch.Tensor] = {}

    def forward(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        z, c = model(batch.wav)
        prediction = self.proj(c)
        self._last = {"predictions": prediction.detach().flatten(0, 1)}
        loss = (prediction - z.detach()).pow(2).mean()
        return ObjectiveOutput(loss, {"mse": loss.detach()})

    def diagnostic_features(self) -> dict[str, torch.Tensor]:
        return self._last if self.features else {}


def batches(count: int = 4) -> list[Batch]:
    g = torch.Generator().manual_seed(0)
    return [Batch(wav=torch.randn(4, 1, WINDOW, generator=g), speaker=torch.zeros(4).long())
            for _ in range(count)]


def trainer(run_dir: Path, model: nn.Module, objective: nn.Module, **settings) -> Trainer:
    params = [*model.parameters(), *objective.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    defaults = dict(max_steps=4, log_every=3, checkpoint_every=0, progress=False,
                    tensorboard=False, diagnostics_every=2, diagnostics_steps=2)
    return Trainer(model, objective, optimizer, scheduler, batches(), ListSampler(), run_dir,
                   TrainerSettings(**{**defaults, **settings}))


@pytest.mark.parametrize("features", [False, True])
def test_collapse_guard_stops_a_planted_collapsed_model(tmp_path, features):
    torch.manual_seed(0)
    run = trainer(tmp_path, CollapsedModel(), MatchFrames(features=features),
                  collapse={"min_effective_rank": 4})
    with pytest.raises(TrainingStoppedError) as err:
        run.fit(resume=False)
    message = str(err.value)
    # The frames of steps 1 and 2: one vector each (it moved between the steps).
    found = re.match(r"collapse: effective rank ([\d.]+) < 4 at step 2 ", message)
    assert found and 1.0 <= float(found.group(1)) < 1.2, message
    assert ("predictions" if features else "diag/z/effective_rank") in message


def test_a_healthy_model_logs_diagnostics_and_trains_on(tmp_path):
    torch.manual_seed(0)
    model = SSLModel(CPCEncoder(dim=16), LSTMContext(16, 16))
    run = trainer(tmp_path, model, MatchFrames(), collapse={"min_effective_rank": 2})
    run.fit(resume=False)
    assert run.step == 4 and model.training
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # Diagnostics at steps 2 and 4 join the step's record (log_every 3 adds step 3); every
    # record keeps its loss.
    assert [r["step"] for r in records] == [2, 3, 4]
    assert all("loss" in r for r in records)
    for record in (records[0], records[2]):
        assert record["diag/z/effective_rank"] > 2 and record["diag/c/effective_rank"] > 2
        assert record["diag/z/std"] > 0
    assert "diag/z/std" not in records[1]


def test_diagnostics_do_not_change_training(tmp_path):
    def final(run_dir: Path, every: int) -> torch.Tensor:
        torch.manual_seed(0)
        model = SSLModel(CPCEncoder(dim=16), LSTMContext(16, 16))
        trainer(run_dir, model, MatchFrames(), diagnostics_every=every).fit(resume=False)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(final(tmp_path / "a", 0), final(tmp_path / "b", 2))
