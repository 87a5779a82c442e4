"""The objective interface: every objective subclasses it and inherits no-op hooks."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import torch

import ssl_speech.objectives as objectives
from ssl_speech.objectives.base import Objective, ObjectiveOutput


def _objective_classes() -> list[type]:
    found = []
    for info in pkgutil.iter_modules(objectives.__path__):
        module = importlib.import_module(f"ssl_speech.objectives.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            has_forward = "forward" in cls.__dict__ and cls.__module__ == module.__name__
            takes_model_batch = has_forward and list(
                inspect.signature(cls.forward).parameters)[1:3] == ["model", "batch"]
            if takes_model_batch:
                found.append(cls)
    return found


def test_every_objective_subclasses_objective() -> None:
    classes = _objective_classes()
    names = {cls.__name__ for cls in classes}
    assert {"CPC", "ACPC", "RPC", "MGF", "TriNet", "PseudoLabelRegression"} <= names
    for cls in classes:
        assert issubclass(cls, Objective), cls


def test_hooks_have_no_op_defaults() -> None:
    class Constant(Objective):
        def forward(self, model, batch) -> ObjectiveOutput:  # noqa: ANN001
            return ObjectiveOutput(torch.zeros(()))

    objective = Constant()
    assert objective.after_optimizer_step(torch.nn.Identity(), 1) is None
    assert objective.extra_state() == {}
    assert objective.load_extra_state({"anything": 1}) is None
    assert objective.diagnostic_features() == {}


def test_hook_signatures_match_the_overrides() -> None:
    """The objectives that override a hook keep the base's parameters."""
    for cls in _objective_classes():
        for hook in ("after_optimizer_step", "extra_state", "load_extra_state",
                     "diagnostic_features"):
            if hook in cls.__dict__:
                got = list(inspect.signature(getattr(cls, hook)).parameters)
                want = list(inspect.signature(getattr(Objective, hook)).parameters)
                assert got == want, (cls.__name__, hook)


def test_forward_must_be_implemented() -> None:
    try:
        Objective()(None, None)
    except NotImplementedError as error:
        assert "Objective must implement forward" in str(error)
    else:
        raise AssertionError("Objective.forward did not raise")
