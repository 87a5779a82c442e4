"""Kill, preemption, corrupt checkpoints, non-finite steps, mixed precision."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train_e2e import losses, small_config
from trainer_fixtures import flat_parameters, make_batches, make_trainer

from ssl_speech.runs import checkpoint as ckpt
from ssl_speech.runs.metrics_log import read_metrics
from ssl_speech.train.__main__ import run
from ssl_speech.train.preemption import PREEMPTED_EXIT_CODE
from ssl_speech.train.trainer import TrainerSettings, TrainingStoppedError


def cli_command(root: Path, run_dir: Path, max_steps: int = 12) -> list[str]:
    return [
        sys.executable, "-m", "ssl_speech.train", "objective=cpc", "data=librispeech",
        f"data.root={root}", "data.train_split=train", "data.dev_split=dev",
        "data.window=3200", "data.batch_size=4", "encoder.dim=32", "context.dim=32",
        "objective.num_steps=4", "objective.num_negatives=16", f"trainer.max_steps={max_steps}",
        "trainer.log_every=1", "trainer.checkpoint_every=3", "trainer.val_every=0",
        "trainer.progress=false", "trainer.tensorboard=false", "trainer.device=cpu",
        "trainer.threads=1", "probe.enabled=false", f"run_dir={run_dir}", "run_name=cli",
    ]


def start(cmd: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {path.name}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


def final_state(run_dir: Path, step: int) -> dict:
    return torch.load(ckpt.checkpoint_path(run_dir, step), weights_only=True)


def assert_same_run(a: Path, b: Path, step: int) -> None:
    assert losses(a) == losses(b)
    sa, sb = final_state(a, step), final_state(b, step)
    for part in ("model", "objective"):
        for name, tensor in sa[part].items():
            assert torch.equal(tensor, sb[part][name]), f"{part}.{name} differs"


@pytest.fixture(scope="module")
def uninterrupted(tiny_corpus, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    done = subprocess.run(cli_command(tiny_corpus, run_dir), capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_sigkill_then_same_command_resumes_bit_for_bit(tiny_corpus, tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    proc = start(cli_command(tiny_corpus, run_dir))
    sidecar = ckpt.checkpoint_path(run_dir, 6).with_suffix(".pt.sha256")
    wait_for(sidecar, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = subprocess.run(cli_command(tiny_corpus, run_dir), capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stderr
    assert_same_run(uninterrupted, run_dir, 12)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_preemption_signal_saves_exits_75_and_requeue_resumes(tiny_corpus, tmp_path, sig,
                                                             uninterrupted):
    run_dir = tmp_path / "run"
    proc = start(cli_command(tiny_corpus, run_dir))
    wait_for(ckpt.checkpoint_path(run_dir, 3).with_suffix(".pt.sha256"), proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == PREEMPTED_EXIT_CODE, err[-2000:]
    assert "preemption signal" in err
    saved = ckpt.list_checkpoints(run_dir)[-1]
    step = int(saved.stem.split("-")[1])
    assert ckpt.verify_checkpoint(saved) is None
    assert losses(run_dir)[-1][0] == step  # the checkpoint is at the last finished step
    done = subprocess.run(cli_command(tiny_corpus, run_dir), capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"at step {step}" in done.stderr
    assert_same_run(uninterrupted, run_dir, 12)


@pytest.mark.slow
def test_corrupt_latest_checkpoint_falls_back_to_the_previous(tiny_corpus, tmp_path):
    full = tmp_path / "full"
    run(small_config(tiny_corpus, full))
    damaged = tmp_path / "damaged"
    run(small_config(tiny_corpus, damaged))
    latest = ckpt.checkpoint_path(damaged, 6)
    latest.write_bytes(latest.read_bytes()[:1000])  # truncated, sidecar kept
    with pytest.warns(UserWarning, match="ckpt-00000006.pt is unusable"):
        resumed = run(small_config(tiny_corpus, damaged))
    assert resumed.step == 6
    assert losses(damaged) == losses(full)


def test_nonfinite_batch_is_skipped_and_counted(tmp_path):
    batches = make_batches(3, 2)
    clean = make_trainer(tmp_path / "clean", batches[:1], max_steps=1)
    clean.fit(resume=False)
    poisoned = list(batches)
    poisoned[1].wav[0, 0, 100] = float("nan")
    trainer = make_trainer(tmp_path / "nan", poisoned[:2], max_steps=2)
    trainer.fit(resume=False)
    # Step 2 saw the NaN: it changed nothing and was counted.
    assert torch.equal(flat_parameters(trainer), flat_parameters(clean))
    assert trainer.nonfinite_total == 1 and trainer.nonfinite_streak == 1
    records = read_metrics(tmp_path / "nan")
    assert records[-1]["nonfinite_steps"] == 1.0
    assert json.loads((tmp_path / "nan" / "metrics.jsonl").read_text().splitlines()[0])[
        "nonfinite_steps"] == 0.0


def test_too_many_nonfinite_steps_stop_with_a_message(tmp_path):
    batches = make_batches(4, 2)
    for batch in batches:
        batch.wav[:] = float("inf")
    trainer = make_trainer(tmp_path / "run", batches, max_steps=4, max_nonfinite=3)
    with pytest.raises(TrainingStoppedError, match=r"3 non-finite steps in a row, the last at "
                                                   r"step 3: non-finite terms \['loss'"):
        trainer.fit(resume=False)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["cpc", "acpc"])
def test_bf16_autocast_run_trains(tiny_corpus, tmp_path, objective):
    cfg = small_config(tiny_corpus, tmp_path / "run", objective,
                       extra=("trainer.precision=bf16", "trainer.max_steps=8"))
    result = run(cfg)
    curve = [loss for _, loss in losses(tmp_path / "run")]
    assert len(curve) == 8 and all(torch.isfinite(torch.tensor(curve)))
    assert result.step == 8


def test_fp16_needs_cuda_and_bad_precision_is_named(tmp_path):
    with pytest.raises(ValueError, match="trainer.precision='64'"):
        TrainerSettings(precision="64")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="precision=16 needs a CUDA device"):
            make_trainer(tmp_path, make_batches(1, 2), precision="16")
