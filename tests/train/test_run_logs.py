"""Optional loggers: a warning when TensorBoard is asked for but missing; W&B offline."""

from __future__ import annotations

import importlib.util

import pytest
from trainer_fixtures import make_batches, make_trainer

from ssl_speech.train import run_logs
from ssl_speech.train.errors import MissingExtraError


def test_tensorboard_requested_but_missing_warns(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(run_logs.importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    trainer = make_trainer(tmp_path, make_batches(1, 2), max_steps=1, tensorboard=True)
    with pytest.warns(UserWarning, match=r"tensorboard is not installed.*ssl_speech\[tensorboard\]"
                                         r".*trainer.tensorboard=false"):
        trainer.fit(resume=False)


def test_wandb_missing_names_the_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # import fails as if not installed
    trainer = make_trainer(tmp_path, make_batches(1, 2), max_steps=1, wandb={"mode": "offline"})
    with pytest.raises(MissingExtraError, match=r"pip install 'ssl_speech\[wandb\]'"):
        trainer.fit(resume=False)


@pytest.mark.slow
def test_wandb_offline_logs_the_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    trainer = make_trainer(tmp_path / "run", make_batches(2, 2), max_steps=2,
                           wandb={"mode": "offline", "project": "test", "dir": str(tmp_path)})
    trainer.config = {"seed": 0}
    trainer.fit(resume=False)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert runs[0].name.split("-", 3)[-1].startswith("run-")  # the id names the run directory
    logged = list(runs[0].glob("*.wandb"))
    assert len(logged) == 1
    records = logged[0].read_bytes()  # protobuf records: the metric names appear as text
    for name in (b"train/loss", b"train/grad_norm", b"train/mse"):
        assert name in records
