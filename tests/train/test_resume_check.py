"""Resuming with a changed config: refused with the differing keys named, unless allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainer_fixtures import make_batches, make_trainer

from ssl_speech.train.errors import ResumeConfigError
from ssl_speech.train.resume_check import changed_keys, check_resume_config

SAVED = {"seed": 0, "data": {"batch_size": 8, "root": "/a", "num_workers": 0},
         "objective": {"_target_": "ssl_speech.objectives.cpc.CPC", "num_steps": 12},
         "trainer": {"max_steps": 10, "progress": True, "precision": "32"},
         "run_dir": "runs/x", "probe": {"enabled": True}}


def changed(**parts) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in SAVED.items()}
    for key, value in parts.items():
        group, name = key.split("__")
        out[group][name] = value
    return out


def test_free_keys_may_change():
    current = changed(data__num_workers=4, trainer__progress=False, trainer__max_steps=20,
                      probe__enabled=False)
    current["run_dir"] = "elsewhere"
    assert changed_keys(SAVED, current) == []


def test_training_keys_are_named_with_both_values():
    current = changed(data__batch_size=16, objective__num_steps=3, data__root="/b")
    current["objective"]["_target_"] = "ssl_speech.objectives.rpc.RPC"
    del current["trainer"]["precision"]
    assert changed_keys(SAVED, current) == [
        ("data.batch_size", 8, 16), ("data.root", "/a", "/b"),
        ("objective._target_", "ssl_speech.objectives.cpc.CPC", "ssl_speech.objectives.rpc.RPC"),
        ("objective.num_steps", 12, 3), ("trainer.precision", "32", "<absent>")]


def test_refused_unless_allowed():
    current = changed(data__batch_size=16)
    with pytest.raises(ResumeConfigError, match=r"ckpt.pt was trained with a different config: "
                       r"data.batch_size: 8 -> 16\. .*trainer.resume_changed=allow"):
        check_resume_config(SAVED, current, "refuse", Path("ckpt.pt"))
    assert check_resume_config(SAVED, current, "allow", Path("ckpt.pt")) == [
        ("data.batch_size", 8, 16)]
    assert check_resume_config({}, current, "refuse", Path("ckpt.pt")) == []


def test_trainer_refuses_a_changed_run_and_resumes_with_consent(tmp_path, capsys):
    batches = make_batches(4, 2)
    first = make_trainer(tmp_path, batches, max_steps=2)
    first.config = SAVED
    first.fit(resume=False)
    other = make_trainer(tmp_path, batches, max_steps=4)
    other.config = changed(data__batch_size=16)
    with pytest.raises(ResumeConfigError, match="data.batch_size: 8 -> 16"):
        other.fit(resume="auto")
    assert other.step == 0
    allowed = make_trainer(tmp_path, batches, max_steps=4, resume_changed="allow")
    allowed.config = changed(data__batch_size=16)
    allowed.fit(resume="auto")
    assert allowed.step == 4
    assert "with a changed config (trainer.resume_changed=allow): data.batch_size: 8 -> 16" \
        in capsys.readouterr().err


def test_resume_names_a_missing_path_or_an_empty_run(tmp_path):
    from ssl_speech.runs.checkpoint import CheckpointError

    trainer = make_trainer(tmp_path / "run", make_batches(1, 2), max_steps=1)
    with pytest.raises(CheckpointError, match=r"trainer.resume=/no/such.pt: no such file or "
                                              r"directory; give a checkpoint file or a run"):
        trainer.fit(resume="/no/such.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty has no usable checkpoint; use auto or "
                                              r"false"):
        trainer.fit(resume=str(tmp_path / "empty"))
    with pytest.raises(CheckpointError, match="trainer.resume=true but .* has no usable"):
        trainer.fit(resume=True)
