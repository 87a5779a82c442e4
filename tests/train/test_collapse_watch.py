"""CollapseWatch alone: when it gathers frames, when it diagnoses, what stops a run."""

from __future__ import annotations

import contextlib

import pytest
import torch

from ssl_speech.data.batch import Batch
from ssl_speech.objectives.base import Objective
from ssl_speech.train.diagnostics import CollapseThresholds
from ssl_speech.train.errors import CollapseError, TrainingStoppedError


class Frames(Objective):
    """Hands out fixed frames and counts how often the watch asked for them."""

    def __init__(self, frames: torch.Tensor) -> None:
        super().__init__()
        self.frames = frames
        self.asked = 0

    def diagnostic_features(self) -> dict[str, torch.Tensor]:
        self.asked += 1
        return {"pred": self.frames}


def watch(every: int, steps: int = 2, **thresholds):
    from ssl_speech.train.collapse_watch import CollapseWatch

    def reduce(values):
        return {name: float(value) for name, value in values.items()}

    return CollapseWatch(every, steps, 64, CollapseThresholds(**thresholds), reduce,
                         contextlib.nullcontext, torch.device("cpu"))


def test_gathers_only_in_the_last_steps_before_a_diagnosis():
    objective = Frames(torch.randn(32, 8, generator=torch.Generator().manual_seed(0)))
    w = watch(every=4, steps=2)
    results = [w.after_step(step, None, objective, []) for step in range(1, 9)]
    assert [bool(r) for r in results] == [False, False, False, True] * 2
    assert objective.asked == 4  # steps 3, 4, 7, 8
    assert set(results[3]) == {"diag/pred/std", "diag/pred/effective_rank"}
    assert results[3]["diag/pred/effective_rank"] > 4


def test_off_means_never_asked():
    objective = Frames(torch.randn(4, 8))
    assert watch(every=0).after_step(4, None, objective, []) == {}
    assert objective.asked == 0


def test_collapsed_frames_stop_with_the_metric_named():
    objective = Frames(torch.ones(32, 8))
    with pytest.raises(CollapseError, match=r"collapse: effective rank 1 < 2 at step 4 "
                                            r"\(diag/pred/effective_rank") as err:
        watch(every=4, steps=1, min_effective_rank=2).after_step(4, None, objective, [])
    assert isinstance(err.value, TrainingStoppedError)


def test_without_objective_frames_the_model_frames_are_used():
    from ssl_speech.nn.context import LSTMContext
    from ssl_speech.nn.encoders import CPCEncoder
    from ssl_speech.nn.model import SSLModel

    torch.manual_seed(0)
    model = SSLModel(CPCEncoder(dim=8), LSTMContext(8, 8))
    batch = Batch(wav=torch.randn(2, 1, 1600), speaker=torch.zeros(2, dtype=torch.long))
    values = watch(every=1, steps=1).after_step(1, model, _NoFrames(), [batch])
    assert set(values) == {"diag/z/std", "diag/z/effective_rank", "diag/c/std",
                           "diag/c/effective_rank"}
    assert model.training


class _NoFrames(Objective):
    def diagnostic_features(self) -> dict[str, torch.Tensor]:
        return {}
