"""Every shipped config composes and instantiates; bad choices fail with Hydra's message."""

import itertools
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ssl_speech.config import compose, config_dir
from ssl_speech.nn.model import SSLModel

CONFIGS = Path(config_dir())


def _choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def _compose(overrides: list[str]):
    return compose(overrides)


# Objectives that need a particular context kind name it in their own config defaults.
COMBINATIONS = [
    (enc, ctx, obj)
    for enc, ctx, obj in itertools.product(_choices("encoder"), _choices("context"),
                                           _choices("objective"))
]


@pytest.mark.parametrize("encoder,context,objective", COMBINATIONS)
def test_every_combination_instantiates_and_runs(encoder, context, objective):
    cfg = _compose([f"encoder={encoder}", f"context={context}", f"objective={objective}"])
    model = SSLModel(instantiate(cfg.encoder), instantiate(cfg.context))
    objective_module = instantiate(cfg.objective)
    wav = torch.randn(2, 1, 8 * 320 * 4)
    z, c = model(wav)
    assert z.shape[-1] == cfg.encoder.dim and c.shape[:2] == z.shape[:2]
    assert isinstance(objective_module, torch.nn.Module)


@pytest.mark.parametrize("group", ["data", "optim", "trainer", "experiment"])
def test_every_option_of_other_groups_composes(group):
    for choice in _choices(group):
        override = f"{group}={choice}"
        cfg = _compose([override])
        assert cfg.data.window > 0


def test_wrong_group_option_lists_the_choices():
    with pytest.raises(ConfigCompositionException, match="Available options") as err:
        _compose(["objective=nope"])
    assert "cpc" in str(err.value)


def test_wrong_key_is_rejected():
    with pytest.raises(ConfigCompositionException):
        _compose(["trainer.max_stepz=3"])


@pytest.mark.slow
def test_compose_fills_run_name_and_run_dir_as_the_command_line_does():
    import subprocess
    import sys

    import yaml

    overrides = ["objective=acpc", "context=gru", "seed=3"]
    cfg = compose(overrides)
    assert cfg.run_name == "acpc-logmel-gru-seed3"
    assert cfg.run_dir == "runs/acpc-logmel-gru-seed3"
    printed = subprocess.run(
        [sys.executable, "-m", "ssl_speech.train", *overrides, "--cfg", "job", "--resolve"],
        capture_output=True, text=True, timeout=120, check=True).stdout
    assert yaml.safe_load(printed) == OmegaConf.to_container(cfg)


def test_compose_leaves_no_hydra_state_and_gives_choices():
    from hydra.core.hydra_config import HydraConfig

    from ssl_speech.config import compose_with_choices

    cfg, choices = compose_with_choices(["objective=rpc", "run_name=mine"])
    assert not HydraConfig.initialized()
    assert "hydra" not in cfg and cfg.run_name == "mine" and cfg.run_dir == "runs/mine"
    assert choices["objective"] == "rpc" and choices["encoder"] == "logmel"
    assert not any(name.startswith("hydra/") for name in choices)
    with pytest.raises(Exception, match="trainer.max_stepz"):  # struct: typos are errors
        cfg.trainer.max_stepz = 3
