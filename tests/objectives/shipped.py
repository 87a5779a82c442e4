"""Compare an objective's constructor defaults with its shipped config, ``configs/objective/``.

One source of defaults: building an objective in Python with no arguments must give the objective
the command line gives with ``objective=<name>``. Keys whose value interpolates another group
(``dim: ${encoder.dim}``) depend on the chosen encoder or context and are left out; a nested
``_target_`` (a momentum schedule, a frozen teacher) is compared with that class's defaults,
which the objective's ``None`` default builds.
"""

from __future__ import annotations

import inspect
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from ssl_speech.config import config_dir
from ssl_speech.objectives.predictive import PredictiveCore

# Arguments of the core its objectives set themselves, not options of the shipped configs.
_CORE_OWN = {"self", "owner", "dim", "context_dim", "num_predictions", "horizon"}


def shipped_objective_config(name: str, overrides: tuple[str, ...] = ()) -> DictConfig:
    """``cfg.objective`` of ``python -m ssl_speech.train objective=<name> <overrides>``."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"objective={name}", *overrides])
    return cfg.objective


def signature_defaults(cls: type) -> dict[str, Any]:
    """The defaults of ``cls(...)``, including the predictive options it forwards to the core."""
    defaults = {}
    forwards_options = False
    for name, parameter in inspect.signature(cls).parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            forwards_options = True
        elif parameter.default is not inspect.Parameter.empty:
            defaults[name] = parameter.default
    if forwards_options:
        for name, parameter in inspect.signature(PredictiveCore).parameters.items():
            if name not in _CORE_OWN:
                defaults[name] = parameter.default
    return defaults


def mismatches(node: DictConfig, cls: type, where: str) -> list[str]:
    """Each key of the config ``node`` whose value differs from ``cls``'s default."""
    defaults = signature_defaults(cls)
    found = []
    for key in node:
        if key == "_target_":
            continue
        if OmegaConf.is_interpolation(node, key):
            continue
        if key not in defaults:
            found.append(f"{where}.{key}: no default in {cls.__name__}")
            continue
        value = node[key]
        if isinstance(value, DictConfig) and "_target_" in value:
            if defaults[key] is not None:
                found.append(f"{where}.{key}: {cls.__name__} default {defaults[key]!r} is not "
                             "None (the nested class's defaults)")
            found += mismatches(value, get_class(value._target_), f"{where}.{key}")
        elif value != defaults[key]:
            found.append(f"{where}.{key}: config {value!r} != {cls.__name__} default "
                         f"{defaults[key]!r}")
    return found


def assert_defaults_are_the_shipped_config(name: str, cls: type) -> None:
    node = shipped_objective_config(name)
    assert get_class(node._target_) is cls
    problems = mismatches(node, cls, f"objective={name}")
    assert not problems, "\n".join(problems)
