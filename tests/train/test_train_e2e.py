"""End-to-end: a few training steps per objective on the tiny embedded corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ssl_speech import load_model
from ssl_speech.config import compose
from ssl_speech.runs import checkpoint as ckpt
from ssl_speech.train.api import train as run

SMALL_OBJECTIVE = {
    "cpc": ["objective.num_steps=4", "objective.num_negatives=16"],
    "acpc": ["objective.num_predictions=3", "objective.num_matched=4",
             "objective.num_negatives=16"],
}


def small_config(root: Path, run_dir: Path, objective: str = "cpc", extra: tuple = ()):
    overrides = [
        f"objective={objective}", "data=librispeech", f"data.root={root}",
        f"data.alignments={root}/alignments.txt", "data.train_split=train",
        "data.dev_split=dev", "data.window=3200", "data.batch_size=4", "data.num_workers=0",
        "data.in_memory=true", "encoder.dim=32", "context.dim=32",
        "trainer.max_steps=6", "trainer.log_every=1", "trainer.checkpoint_every=3",
        "trainer.val_every=3", "trainer.val_batches=2", "trainer.progress=false",
        "trainer.tensorboard=false", "trainer.device=cpu", "optim.warmup_steps=2",
        "probe.enabled=false", f"run_dir={run_dir}", "run_name=test",
        *SMALL_OBJECTIVE[objective], *extra,
    ]
    return compose(overrides)


def losses(run_dir: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if r["split"] == "train"]


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["cpc", "acpc"])
def test_train_writes_checkpoint_that_load_model_reloads(tiny_corpus, tmp_path, objective):
    result = run(small_config(tiny_corpus, tmp_path / "run", objective))
    assert result.step == 6
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run")] == [
        "ckpt-00000003.pt", "ckpt-00000006.pt"]
    steps = [s for s, _ in losses(tmp_path / "run")]
    assert steps == [1, 2, 3, 4, 5, 6]
    val = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
           if '"val"' in x]
    assert len(val) == 2 and all("acc" in r for r in val)

    reloaded = load_model(tmp_path / "run")
    assert not reloaded.training
    wav = torch.randn(16000 * 2)
    result.model.eval()
    with torch.no_grad():
        assert torch.equal(reloaded.extract(wav), result.model.extract(wav))
    assert reloaded.config["objective"]["_target_"].endswith(
        "CPC" if objective == "cpc" else "ACPC")
    # Checkpoints hold no pickled code: plain weights_only loading works.
    torch.load(ckpt.checkpoint_path(tmp_path / "run", 6), weights_only=True)


@pytest.mark.slow
def test_resume_continues_the_same_loss_curve(tiny_corpus, tmp_path):
    full = tmp_path / "full"
    run(small_config(tiny_corpus, full))
    interrupted = tmp_path / "interrupted"
    run(small_config(tiny_corpus, interrupted))
    # Lose everything after the step-3 checkpoint, as if the process had died there.
    last = ckpt.checkpoint_path(interrupted, 6)
    last.unlink()
    last.with_name(last.name + ".sha256").unlink()
    resumed = run(small_config(tiny_corpus, interrupted))
    assert resumed.step == 6
    assert losses(interrupted) == losses(full)
    a = torch.load(ckpt.checkpoint_path(full, 6), weights_only=True)
    b = torch.load(ckpt.checkpoint_path(interrupted, 6), weights_only=True)
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for name, tensor in a["objective"].items():
        assert torch.equal(tensor, b["objective"][name]), name


@pytest.mark.slow
def test_finished_run_is_not_retrained(tiny_corpus, tmp_path):
    run(small_config(tiny_corpus, tmp_path / "run"))
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    again = run(small_config(tiny_corpus, tmp_path / "run"))
    assert again.step == 6
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before
