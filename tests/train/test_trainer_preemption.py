"""Preemption signals at awkward moments: twice in one step, during validation, during the
preemption checkpoint, during the final checkpoint, during the end-of-run probe."""

from __future__ import annotations

import os
import signal

import pytest
from trainer_fixtures import NextFrameRegression, make_batches, make_trainer

from ssl_speech.runs import checkpoint as ckpt
from ssl_speech.train.preemption import PREEMPTED_EXIT_CODE
from ssl_speech.train.trainer import PreemptedExit


def send(sig: signal.Signals = signal.SIGTERM) -> None:
    os.kill(os.getpid(), sig)


def saved_steps(run_dir) -> list[int]:
    return [int(p.stem.split("-")[1]) for p in ckpt.list_checkpoints(run_dir)]


def fit_until_preempted(trainer) -> None:
    with pytest.raises(PreemptedExit) as stop:
        trainer.fit(resume=False)
    assert stop.value.code == PREEMPTED_EXIT_CODE


def test_two_signals_in_one_step_save_once_and_exit_75(tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    forward = NextFrameRegression.forward

    def signalling_forward(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 2:  # during step 2
            send(signal.SIGTERM)
            send(signal.SIGUSR1)
        return forward(self, model, batch)

    monkeypatch.setattr(NextFrameRegression, "forward", signalling_forward)
    trainer = make_trainer(tmp_path, make_batches(4, 2), max_steps=4)
    fit_until_preempted(trainer)
    assert trainer.step == 2 and saved_steps(tmp_path) == [2]
    err = capsys.readouterr().err
    assert err.count("preemption signal (SIGTERM) at step 2: saving") == 1


def test_signal_during_validation_saves_at_that_step(tmp_path, monkeypatch):
    forward = NextFrameRegression.forward

    def signalling_forward(self, model, batch):
        if not self.training:  # validation
            send(signal.SIGUSR1)
        return forward(self, model, batch)

    monkeypatch.setattr(NextFrameRegression, "forward", signalling_forward)
    trainer = make_trainer(tmp_path, make_batches(4, 2), max_steps=4, val_every=2)
    trainer.val_loader = make_batches(1, 2, seed=9)
    fit_until_preempted(trainer)
    assert trainer.step == 2 and saved_steps(tmp_path) == [2]
    assert ckpt.verify_checkpoint(ckpt.checkpoint_path(tmp_path, 2)) is None


def test_signal_during_the_preemption_checkpoint_is_ignored(tmp_path, monkeypatch):
    save = ckpt.save_checkpoint
    forward = NextFrameRegression.forward
    calls = {"n": 0}

    def signalling_save(state, path):
        send(signal.SIGTERM)  # a second signal while the checkpoint is written
        return save(state, path)

    def signalling_forward(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 1:
            send(signal.SIGUSR1)
        return forward(self, model, batch)

    monkeypatch.setattr(ckpt, "save_checkpoint", signalling_save)
    monkeypatch.setattr(NextFrameRegression, "forward", signalling_forward)
    trainer = make_trainer(tmp_path, make_batches(3, 2), max_steps=3)
    fit_until_preempted(trainer)
    assert saved_steps(tmp_path) == [1]
    assert ckpt.verify_checkpoint(ckpt.checkpoint_path(tmp_path, 1)) is None


def test_signal_during_the_final_checkpoint_keeps_it_and_rerun_finds_the_run_complete(
        tmp_path, monkeypatch, capsys):
    save = ckpt.save_checkpoint

    def signalling_save(state, path):
        written = save(state, path)
        send(signal.SIGTERM)  # after the final write, before the run returns
        return written

    monkeypatch.setattr(ckpt, "save_checkpoint", signalling_save)
    trainer = make_trainer(tmp_path, make_batches(2, 2), max_steps=2)
    fit_until_preempted(trainer)
    assert "at step 2: training is complete and saved" in capsys.readouterr().err
    assert saved_steps(tmp_path) == [2]
    monkeypatch.setattr(ckpt, "save_checkpoint", save)
    again = make_trainer(tmp_path, make_batches(2, 2), max_steps=2)
    assert again.fit(resume="auto") == {}
    assert again.step == 2
    assert "run already complete at step 2" in capsys.readouterr().err


def test_signal_during_the_end_of_run_probe_lets_it_finish(monkeypatch, capsys):
    from ssl_speech.train import api

    def signalling_probe(cfg, model, source, progress):
        send(signal.SIGTERM)
        return {"probe": 1.0}

    monkeypatch.setattr(api, "_probe", signalling_probe)
    before = signal.getsignal(signal.SIGTERM)
    assert api._probe_complete_run(None, None, None, False) == {"probe": 1.0}
    assert "during the end-of-run probe" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == before
