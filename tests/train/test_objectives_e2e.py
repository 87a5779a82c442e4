"""End-to-end: RPC, MGF and TriNet (log-mel and checkpoint teachers) train, checkpoint, resume
and reload on the tiny embedded corpus."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from ssl_speech import load_model
from ssl_speech.config import config_dir
from ssl_speech.objectives.frozen_teacher import FrozenTeacher
from ssl_speech.runs import checkpoint as ckpt
from ssl_speech.train.__main__ import run
from ssl_speech.train.trainer import TrainingStoppedError

TRANSFORMER = ["context.num_heads=2", "context.ffn_dim=64"]
SMALL_OBJECTIVE = {
    "cpc": ["objective=cpc", "objective.num_steps=4", "objective.num_negatives=16"],
    "rpc": ["objective=rpc", "objective.num_steps=4", "objective.num_negatives=16"],
    "mgf": ["objective=mgf", "encoder.n_mels=20", "encoder.hidden=32", "context.num_layers=1",
            *TRANSFORMER, "objective.mask_span=5", "objective.min_unmasked=5",
            "objective.n_mels=20", "objective.frame_hidden=16", "objective.utt_crop=8",
            "objective.utt_gap=2", "objective.utt_hidden=16", "objective.utt_proj_dim=8"],
    "trinet": ["objective=trinet", "context.num_layers=3", *TRANSFORMER, "objective.top_k=2",
               "objective.mask_span=4", "objective.min_unmasked=4", "objective.num_classes=8",
               "objective.momentum.steps=4", "trainer.diagnostics_every=3",
               "trainer.diagnostics_steps=2"],
}
# Wall-clock figures: the only entries of a record a resumed run may log differently.
CLOCK = ("time", "audio_s_per_s")
# What each objective must log on every training step besides the loss.
LOGGED = {
    "rpc": ("acc", "rpc_j", "mi_rpc", "mi_bound", "mi_rpc/clamped"),
    "mgf": ("acc", "loss/frame", "loss/phone", "loss/utt", "acc/phone", "acc/utt"),
    "trinet": ("acc", "loss/regression", "loss/class", "acc/class", "teacher/momentum"),
}


def small_config(root: Path, run_dir: Path, objective: str, extra: tuple = ()):
    overrides = [
        *SMALL_OBJECTIVE[objective], "data=librispeech", f"data.root={root}",
        f"data.alignments={root}/alignments.txt", "data.train_split=train",
        "data.dev_split=dev", "data.window=3200", "data.batch_size=4", "data.num_workers=0",
        "data.in_memory=true", "encoder.dim=32", "context.dim=32", "trainer.max_steps=6",
        "trainer.log_every=1", "trainer.checkpoint_every=3", "trainer.val_every=3",
        "trainer.val_batches=2", "trainer.progress=false", "trainer.tensorboard=false",
        "trainer.device=cpu", "optim.warmup_steps=2", "probe.enabled=false",
        f"run_dir={run_dir}", "run_name=test", *extra,
    ]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def records(run_dir: Path, split: str = "train") -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def drop_last_checkpoint(run_dir: Path, step: int) -> None:
    """Lose everything after the previous checkpoint, as if the process had died there."""
    last = ckpt.checkpoint_path(run_dir, step)
    last.unlink()
    last.with_name(last.name + ".sha256").unlink()


def check_train_resume_reload(cfg_of, run_dir: Path, objective: str) -> None:
    """Train 6 steps, reload with ``load_model``, then resume from step 3: same curve, same
    weights, same objective state (heads, EMA teacher, mask vector)."""
    result = run(cfg_of(run_dir))
    assert result.step == 6
    assert [p.name for p in ckpt.list_checkpoints(run_dir)] == [
        "ckpt-00000003.pt", "ckpt-00000006.pt"]
    train = records(run_dir)
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    for record in train:
        for key in ("loss", *LOGGED[objective]):
            assert math.isfinite(record[key]), (key, record)
    val = records(run_dir, "val")
    assert [r["step"] for r in val] == [3, 6] and all(math.isfinite(r["loss"]) for r in val)

    reloaded = load_model(run_dir)
    assert not reloaded.training and reloaded.checkpoint_step == 6
    result.model.eval()
    wav = torch.randn(16000)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.extract(wav), result.model.extract(wav),
                                   rtol=0, atol=0)
    assert reloaded.config["objective"]["_target_"].rsplit(".", 1)[-1] == \
        type(result.objective).__name__
    final = torch.load(ckpt.checkpoint_path(run_dir, 6), weights_only=True)

    drop_last_checkpoint(run_dir, 6)
    resumed = run(cfg_of(run_dir))
    assert resumed.step == 6
    # Every logged figure but the clock's is the uninterrupted run's: losses, metrics, lr,
    # gradient norms and (TriNet) the teacher's momentum and the collapse diagnostics.
    def figures(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in CLOCK} for r in rows]

    assert figures(records(run_dir)) == figures(train)
    again = torch.load(ckpt.checkpoint_path(run_dir, 6), weights_only=True)
    for part in ("model", "objective"):
        assert set(again[part]) == set(final[part])
        for name, value in final[part].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, again[part][name]), (part, name)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["rpc", "mgf", "trinet"])
def test_objective_trains_checkpoints_resumes_and_reloads(tiny_corpus, tmp_path, objective):
    check_train_resume_reload(lambda d: small_config(tiny_corpus, d, objective),
                              tmp_path / objective, objective)
    if objective == "trinet":
        state = torch.load(ckpt.checkpoint_path(tmp_path / objective, 6), weights_only=True)
        assert any(k.startswith("ema.network.") for k in state["objective"])
        assert state["objective_extra"]["frozen_teacher"]["kind"] == "log_mel"
        rows = records(tmp_path / objective)
        diag = [r for r in rows if "diag/targets/std" in r]
        assert [r["step"] for r in diag] == [3, 6]
        # The trainer's post-step hook moved the EMA teacher with τ(step): the metric of step
        # s is the momentum of update s − 1 (0.999 → 0.9999 over 4 updates).
        for r in rows:
            tau = 0.999 + 0.0009 * min(r["step"] - 1, 4) / 4
            assert r["teacher/momentum"] == pytest.approx(tau, abs=1e-7), r["step"]


@pytest.fixture(scope="module")
def cpc_run(tiny_corpus, tmp_path_factory) -> Path:
    """A short CPC run whose checkpoint serves as a frozen teacher."""
    run_dir = tmp_path_factory.mktemp("teacher") / "cpc"
    run(small_config(tiny_corpus, run_dir, "cpc", ("trainer.max_steps=3", "trainer.val_every=0")))
    return run_dir


@pytest.mark.slow
def test_trinet_with_a_cpc_checkpoint_teacher(tiny_corpus, tmp_path, cpc_run):
    teacher_file = ckpt.checkpoint_path(cpc_run, 3)
    teacher_bytes = teacher_file.read_bytes()
    # The run directory is given: its newest checkpoint is the teacher.
    extra = (f"objective.teacher.checkpoint={cpc_run}",)
    run_dir = tmp_path / "trinet"
    check_train_resume_reload(lambda d: small_config(tiny_corpus, d, "trinet", extra), run_dir,
                              "trinet")
    state = torch.load(ckpt.checkpoint_path(run_dir, 6), weights_only=True)
    record = state["objective_extra"]["frozen_teacher"]
    assert record == {"kind": "checkpoint", "path": str(teacher_file.resolve()),
                      "sha256": hashlib.sha256(teacher_bytes).hexdigest(), "layer": "context",
                      "normalize": True}
    # Recorded, not copied: no CPC weight is in the objective's state.
    cpc_state = torch.load(teacher_file, weights_only=True)["model"]
    assert not any(k.startswith("teacher") for k in state["objective"])
    cpc_weights = [v for v in cpc_state.values() if v.numel() > 1]
    assert not any(v.shape == w.shape and torch.equal(v, w) for w in cpc_weights
                   for v in state["objective"].values() if isinstance(v, torch.Tensor))
    # The teacher file itself was never written to.
    assert teacher_file.read_bytes() == teacher_bytes

    # The trained objective's teacher still holds the CPC checkpoint's weights exactly.
    result = run(small_config(tiny_corpus, run_dir, "trinet", extra))  # complete: no training
    teacher = result.objective.teacher
    assert teacher.kind == "checkpoint" and not teacher.network.training
    for name, value in teacher.network.state_dict().items():
        assert torch.equal(value, cpc_state[name]), name
    assert all(not p.requires_grad for p in teacher.network.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["rpc", "mgf", "trinet"])
def test_a_checkpoint_of_any_objective_is_a_frozen_teacher(tiny_corpus, tmp_path, objective):
    run_dir = tmp_path / objective
    run(small_config(tiny_corpus, run_dir, objective,
                     ("trainer.max_steps=2", "trainer.val_every=0", "trainer.checkpoint_every=2")))
    model = load_model(run_dir)
    wav = torch.randn(2, 1, 3200)
    for layer in ("encoder", "context", "context.0"):
        teacher = FrozenTeacher(run_dir, layer=layer)
        frames = teacher.frames(wav, 160, 20)
        expected_dim = model.latent_dim if layer == "encoder" else model.dim
        assert frames.shape == (2, 20, expected_dim) and torch.isfinite(frames).all()
    assert teacher.path == ckpt.checkpoint_path(run_dir, 2).resolve()


@pytest.mark.slow
def test_collapse_threshold_from_the_config_stops_a_trinet_run(tiny_corpus, tmp_path):
    # No 32-dim feature of 4 windows reaches an effective rank of 1000: the guard must fire at
    # the first diagnosis and name the metric, its threshold and the step.
    cfg = small_config(tiny_corpus, tmp_path / "run", "trinet",
                       ("trainer.collapse.min_effective_rank=1000", "trainer.val_every=0"))
    with pytest.raises(TrainingStoppedError,
                       match=r"^collapse: effective rank [\d.]+ < 1000 at step 3 \(diag/"
                             r".*trainer\.collapse\.min_effective_rank"):
        run(cfg)
    assert [r["step"] for r in records(tmp_path / "run")] == [1, 2]
