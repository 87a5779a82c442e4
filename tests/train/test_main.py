"""``python -m ssl_speech.train``: user errors as one ``error:`` line naming the option and the
fix (no traceback unless HYDRA_FULL_ERROR=1), checked before the corpus scan; job name."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

FAST = ["trainer.max_steps=1", "probe.enabled=false", "trainer.progress=false",
        "trainer.tensorboard=false"]


def train_cli(tmp_path: Path, *args: str, full_error: bool = False,
              ) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "ssl_speech.train", *args, *FAST, f"run_dir={tmp_path / 'run'}",
         f"hydra.run.dir={tmp_path / 'hydra'}"],
        capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    # Checked before the data: the missing corpus root is not reached.
    (["trainer.precision=fp16", "data=librispeech", "data.root=/nonexistent"],
     "error: trainer.precision='fp16': expected 32, bf16 or 16"),
])
def test_user_error_is_one_line_without_traceback(tmp_path, args, message):
    done = train_cli(tmp_path, *args)
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == message, done.stderr
    assert "Traceback" not in done.stderr and "HYDRA_FULL_ERROR=1" in done.stderr
    assert not (tmp_path / "run").exists()
    # The job is named after the module: its log file too.
    assert (tmp_path / "hydra" / "ssl_speech.train.log").exists()


@pytest.mark.slow
def test_full_error_shows_the_traceback(tmp_path):
    done = train_cli(tmp_path, "trainer.precision=fp16", full_error=True)
    assert done.returncode == 1
    assert "Traceback" in done.stderr
    assert "ValueError: trainer.precision='fp16'" in done.stderr


def test_slurm_launcher_without_the_extra_says_what_to_install(tmp_path):
    try:
        installed = importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher")
    except ModuleNotFoundError:
        installed = None
    if installed is not None:
        pytest.skip("hydra-submitit-launcher is installed")
    done = train_cli(tmp_path, "-m", "hydra/launcher=slurm")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: hydra/launcher=slurm needs Hydra's submitit launcher, which is not installed: "
        "pip install 'ssl_speech[slurm]' (or pip install hydra-submitit-launcher)")


@pytest.mark.slow
def test_help_names_the_command():
    done = subprocess.run([sys.executable, "-m", "ssl_speech.train", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert done.stdout.startswith("ssl_speech.train: train a self-supervised speech model.\n"
                                  "usage: python -m ssl_speech.train")
    assert "__main__" not in done.stdout
