"""TriNet: the EMA teacher and its schedule, the frozen teacher, targets, losses, training."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from shipped import assert_defaults_are_the_shipped_config
from torch import nn

from ssl_speech.config import config_dir
from ssl_speech.data.batch import Batch
from ssl_speech.nn.context import LSTMContext, TransformerContext
from ssl_speech.nn.encoders import CPCEncoder, Wav2Vec2ConvEncoder
from ssl_speech.nn.model import SSLModel
from ssl_speech.nn.norms import instance_norm_over_time
from ssl_speech.objectives.ema import EMATeacher, LinearMomentumSchedule
from ssl_speech.objectives.frozen_teacher import FrozenTeacher
from ssl_speech.objectives.trinet import TriNet, layer_average_target, masked_regression_loss
from ssl_speech.runs import checkpoint as ckpt
from ssl_speech.train.__main__ import run

D = 16
SMALL = dict(dim=D, top_k=2, num_classes=8, mask_span=4, min_unmasked=4)


def tiny_context(layers: int = 3) -> TransformerContext:
    return TransformerContext(D, dim=D, num_layers=layers, num_heads=2, ffn_dim=32, dropout=0.1,
                              causal=False)


def tiny_model(seed: int = 0) -> SSLModel:
    torch.manual_seed(seed)
    return SSLModel(CPCEncoder(D), tiny_context())


def tiny_batch(frames: int = 40, batch: int = 4, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(frames * 160) / 16000
    f0 = torch.linspace(150, 400, batch)[:, None]
    wav = torch.sin(2 * math.pi * f0 * t * (1 + 2 * t))
    wav = wav + 0.05 * torch.randn(batch, len(t), generator=g)
    return Batch(wav=wav[:, None], speaker=torch.zeros(batch, dtype=torch.long))


def save_teacher_checkpoint(path: Path, seed: int = 1) -> Path:
    """A small CPC-encoder + LSTM checkpoint in the training checkpoints' format."""
    torch.manual_seed(seed)
    model = SSLModel(CPCEncoder(8), LSTMContext(8, 12))
    config = {"encoder": {"_target_": "ssl_speech.nn.encoders.CPCEncoder", "dim": 8},
              "context": {"_target_": "ssl_speech.nn.context.LSTMContext", "input_dim": 8,
                          "dim": 12}}
    return ckpt.save_checkpoint({"model": model.state_dict(), "config": config, "step": 0}, path)


def trainable(*modules: nn.Module) -> list[nn.Parameter]:
    return [p for m in modules for p in m.parameters() if p.requires_grad]


# ------------------------------------------------------------------ EMA teacher
def test_momentum_schedule_is_linear_then_flat():
    schedule = LinearMomentumSchedule(start=0.999, end=0.9999, steps=30000)
    assert schedule(0) == pytest.approx(0.999)
    assert schedule(15000) == pytest.approx(0.99945)
    assert schedule(30000) == pytest.approx(0.9999)
    assert schedule(90000) == pytest.approx(0.9999)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        LinearMomentumSchedule(steps=0)
    with pytest.raises(ValueError, match=r"end must be in \[0, 1\]"):
        LinearMomentumSchedule(end=1.5)


def test_ema_update_matches_the_formula():
    student = tiny_context()
    teacher = EMATeacher(student)
    teacher.copy_from(student)
    for t, s in zip(teacher.network.parameters(), student.parameters()):
        assert torch.equal(t, s) and t is not s
    before = [p.detach().clone() for p in teacher.network.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    teacher.update(student, 0.9)
    for t, old, s in zip(teacher.network.parameters(), before, student.parameters()):
        torch.testing.assert_close(t, 0.9 * old + 0.1 * s, rtol=1e-6, atol=1e-7)


def test_update_teacher_uses_the_schedule_at_the_step():
    model = tiny_model()
    objective = TriNet(model.context, momentum=LinearMomentumSchedule(0.5, 0.9, steps=4),
                       **SMALL)
    objective(model, tiny_batch())  # takes the student's weights
    before = [p.detach().clone() for p in objective.ema.network.parameters()]
    with torch.no_grad():
        for p in model.context.parameters():
            p.mul_(-2.0)
    objective.after_optimizer_step(model, 2)
    assert objective.last_momentum == pytest.approx(0.7)
    for t, old, s in zip(objective.ema.network.parameters(), before, model.context.parameters()):
        torch.testing.assert_close(t, 0.7 * old + 0.3 * s, rtol=1e-6, atol=1e-7)
    # A resumed objective logs the last update's momentum, not the schedule's start.
    resumed = TriNet(tiny_context(), momentum=LinearMomentumSchedule(0.5, 0.9, steps=4), **SMALL)
    assert resumed.last_momentum == pytest.approx(0.5)
    resumed.load_extra_state(objective.extra_state())
    assert resumed.last_momentum == pytest.approx(0.7)


def test_ema_teacher_receives_no_gradient_and_stays_in_eval_mode():
    model = tiny_model()
    objective = TriNet(model.context, **SMALL)
    objective.train()
    assert not objective.ema.training and not objective.ema.network.training
    out = objective(model, tiny_batch())
    out.loss.backward()
    teacher_params = list(objective.ema.parameters())
    assert teacher_params and all(not p.requires_grad and p.grad is None for p in teacher_params)
    ids = {id(p) for p in trainable(model, objective)}
    assert not ids & {id(p) for p in teacher_params}
    assert all(p.grad is not None for p in model.context.parameters())
    assert objective.regression_head.weight.grad is not None


def test_teacher_state_survives_a_state_dict_round_trip():
    model = tiny_model()
    objective = TriNet(model.context, **SMALL)
    objective(model, tiny_batch())
    objective.after_optimizer_step(model, 1)
    state = objective.state_dict()
    fresh = TriNet(tiny_context(), **SMALL)
    assert not fresh.ema.initialized
    fresh.load_state_dict(state)
    assert fresh.ema.initialized  # a resumed run keeps its teacher, no new copy
    for a, b in zip(fresh.ema.network.parameters(), objective.ema.network.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="does not match the teacher's architecture"):
        fresh.ema.copy_from(tiny_context(layers=2))


# ------------------------------------------------------------------ targets and losses
def test_instance_norm_targets_have_zero_mean_and_unit_variance_over_time():
    x = 3.0 + 5.0 * torch.randn(2, 50, 6)
    y = instance_norm_over_time(x)
    torch.testing.assert_close(y.mean(dim=1), torch.zeros(2, 6), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=1, unbiased=False), torch.ones(2, 6), atol=1e-3,
                               rtol=0)
    layers = [torch.randn(2, 50, 6) * (i + 1) + i for i in range(4)]
    target = layer_average_target(layers, top_k=1)
    torch.testing.assert_close(target, instance_norm_over_time(layers[-2]))
    torch.testing.assert_close(target.var(dim=1, unbiased=False), torch.ones(2, 6), atol=1e-3,
                               rtol=0)
    both = layer_average_target(layers, top_k=2)
    expected = (instance_norm_over_time(layers[1]) + instance_norm_over_time(layers[2])) / 2
    torch.testing.assert_close(both, expected)
    torch.testing.assert_close(both.mean(dim=1), torch.zeros(2, 6), atol=1e-5, rtol=0)
    # The final layer never enters the target.
    changed = [*layers[:-1], torch.randn(2, 50, 6)]
    torch.testing.assert_close(layer_average_target(changed, top_k=3),
                               layer_average_target(layers, top_k=3))
    with pytest.raises(ValueError, match=r"top_k must be in \[1, 3\]"):
        layer_average_target(layers, top_k=4)


def test_regression_loss_counts_masked_frames_only_scaled_by_sqrt_dim():
    prediction, target = torch.randn(2, 10, 9), torch.randn(2, 10, 9)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, 2:5] = True
    mask[1, 7] = True
    loss = masked_regression_loss(prediction, target, mask)
    expected = ((prediction - target)[mask].square().sum(dim=-1) / 3.0).mean()
    torch.testing.assert_close(loss, expected)
    elsewhere = target.clone()
    elsewhere[~mask] += 100.0
    torch.testing.assert_close(masked_regression_loss(prediction, elsewhere, mask), loss)
    smooth = masked_regression_loss(prediction, target, mask, smooth_l1_beta=0.5)
    per = F.smooth_l1_loss(prediction[mask], target[mask], reduction="none", beta=0.5)
    torch.testing.assert_close(smooth, (per.sum(dim=-1) / 3.0).mean())
    nothing = masked_regression_loss(prediction.requires_grad_(), target, mask & False)
    assert float(nothing.detach()) == 0.0 and nothing.requires_grad


def test_class_loss_is_the_cross_entropy_on_all_frames():
    model = tiny_model()
    model.eval()  # no dropout, so the pass can be repeated
    objective = TriNet(model.context, **SMALL)
    batch = tiny_batch()
    torch.manual_seed(5)
    out = objective(model, batch)
    assert set(out.metrics) == {"loss/regression", "loss/class", "acc/class", "acc",
                                "mask/fraction", "teacher/momentum"}
    torch.manual_seed(5)  # the masker is the first to draw: the same spans again
    mask, _, _ = objective.masker.sample(4, 40)
    classes = objective.pseudo_classes(batch.wav, 160, 40)
    with torch.no_grad():
        z = model.encoder(batch.wav)
        layers = model.context.forward_layers(objective.masker.apply(z, mask))
        logits = objective.class_head(layers[-1])
    expected = F.cross_entropy(logits.flatten(0, 1), classes.flatten())
    torch.testing.assert_close(out.metrics["loss/class"], expected)
    accuracy = (logits.argmax(dim=-1) == classes).float().mean()
    torch.testing.assert_close(out.metrics["acc/class"], accuracy)
    target = objective.ema_target(z)
    prediction = objective.regression_head(layers[-2])
    torch.testing.assert_close(out.metrics["loss/regression"],
                               masked_regression_loss(prediction, target, mask))


def _replay(objective: TriNet, model: SSLModel, batch: Batch) -> tuple[torch.Tensor, list]:
    """The mask and student layers of the pass that followed ``torch.manual_seed(5)``."""
    torch.manual_seed(5)  # the masker is the first to draw: the same spans again
    mask, _, _ = objective.masker.sample(4, 40)
    with torch.no_grad():
        z = model.encoder(batch.wav)
        layers = model.context.forward_layers(objective.masker.apply(z, mask))
    return mask, layers


def test_class_loss_on_masked_frames_only():
    model = tiny_model()
    model.eval()
    objective = TriNet(model.context, frozen_frames="masked", **SMALL)
    batch = tiny_batch()
    torch.manual_seed(5)
    out = objective(model, batch)
    mask, layers = _replay(objective, model, batch)
    assert 0 < int(mask.sum()) < mask.numel()
    classes = objective.pseudo_classes(batch.wav, 160, 40)
    with torch.no_grad():
        logits = objective.class_head(layers[-1])
    expected = F.cross_entropy(logits[mask], classes[mask])
    torch.testing.assert_close(out.metrics["loss/class"], expected)
    everywhere = F.cross_entropy(logits.flatten(0, 1), classes.flatten())
    assert not torch.isclose(expected, everywhere)  # the option changes the loss
    accuracy = (logits[mask].argmax(dim=-1) == classes[mask]).float().mean()
    torch.testing.assert_close(out.metrics["acc/class"], accuracy)


@pytest.mark.parametrize("frames", ["all", "masked"])
def test_feature_regression_frozen_branch(frames: str):
    """frozen_target="features": a linear map of the last layer regresses the frozen teacher's
    (instance-normalised) frame features, with the EMA branch's error; no classes."""
    model = tiny_model()
    model.eval()
    objective = TriNet(model.context, frozen_target="features", frozen_frames=frames, **SMALL)
    assert objective.class_head is None and not hasattr(objective, "projection")
    assert objective.feature_head.out_features == objective.teacher.dim == 80
    batch = tiny_batch()
    torch.manual_seed(5)
    out = objective(model, batch)
    assert "loss/class" not in out.metrics and "acc" not in out.metrics
    mask, layers = _replay(objective, model, batch)
    target = objective.teacher.frames(batch.wav, 160, 40)
    with torch.no_grad():
        prediction = objective.feature_head(layers[-1])
    chosen = mask if frames == "masked" else torch.ones_like(mask)
    per_frame = (prediction - target).square().sum(-1) / math.sqrt(80)
    torch.testing.assert_close(out.metrics["loss/frozen"], per_frame[chosen].mean())
    out.loss.backward()
    assert objective.feature_head.weight.grad.abs().sum() > 0
    features = objective.diagnostic_features()
    assert features["frozen_predictions"].shape == (int(chosen.sum()), 80)
    assert features["frozen_targets"].shape == (int(chosen.sum()), 80)


def test_frozen_branch_options_are_validated():
    context = tiny_context()
    with pytest.raises(ValueError, match="frozen_target must be one of"):
        TriNet(context, frozen_target="vectors", **SMALL)
    with pytest.raises(ValueError, match="frozen_frames must be one of"):
        TriNet(context, frozen_frames="unmasked", **SMALL)


def test_pseudo_classes_are_fixed_per_frame_and_follow_the_student_frame_rate():
    objective = TriNet(tiny_context(), **SMALL)
    batch = tiny_batch(frames=40)
    classes = objective.pseudo_classes(batch.wav, 160, 40)
    assert classes.shape == (4, 40) and classes.dtype == torch.long
    assert int(classes.min()) >= 0 and int(classes.max()) < 8
    assert torch.equal(classes, objective.pseudo_classes(batch.wav, 160, 40))
    assert len(classes.unique()) > 1
    # A 20 ms student: the two 10 ms teacher frames under each student frame are averaged.
    features = objective.teacher.features(batch.wav)[:, :40]
    pooled = instance_norm_over_time(features.view(4, 20, 2, -1).mean(dim=2))
    expected = (pooled @ objective.projection.T).argmax(dim=-1)
    assert torch.equal(objective.pseudo_classes(batch.wav, 320, 20), expected)
    with pytest.raises(ValueError, match="not a multiple"):
        objective.pseudo_classes(batch.wav, 240, 20)


def test_a_wav2vec2_student_trains_against_the_log_mel_teacher():
    torch.manual_seed(0)
    model = SSLModel(Wav2Vec2ConvEncoder(dim=D, conv_dim=16), tiny_context())
    objective = TriNet(model.context, **SMALL)
    out = objective(model, tiny_batch(frames=60))
    assert torch.isfinite(out.loss)
    out.loss.backward()


def test_branches_with_weight_zero_are_not_built():
    ema_only = TriNet(tiny_context(), class_weight=0.0, **SMALL)
    assert ema_only.teacher is None and ema_only.class_head is None
    assert "projection" not in ema_only.state_dict()
    assert ema_only.extra_state() == {"momentum": pytest.approx(0.999)}  # no teacher record
    model = tiny_model()
    out = ema_only(model, tiny_batch())
    assert "loss/class" not in out.metrics and "loss/regression" in out.metrics
    assert set(ema_only.diagnostic_features()) == {"penultimate", "predictions", "targets"}
    frozen_only = TriNet(None, regression_weight=0.0, **SMALL)
    assert frozen_only.ema is None and frozen_only.regression_head is None
    out = frozen_only(model, tiny_batch())
    assert "loss/regression" not in out.metrics
    frozen_only.after_optimizer_step(model, 1)  # nothing to update
    assert set(frozen_only.extra_state()) == {"frozen_teacher"}
    with pytest.raises(ValueError, match="both 0"):
        TriNet(tiny_context(), regression_weight=0.0, class_weight=0.0, **SMALL)
    with pytest.raises(ValueError, match="needs context"):
        TriNet(None, **SMALL)


def test_a_context_without_enough_layers_is_refused_with_the_fix():
    model = SSLModel(CPCEncoder(D), LSTMContext(D, D))
    objective = TriNet(model.context, **SMALL)
    with pytest.raises(ValueError, match="at least 3 layers.*bitransformer"):
        objective(model, tiny_batch())


def test_diagnostic_features_are_the_last_batch_frames():
    model = tiny_model()
    objective = TriNet(model.context, **SMALL)
    assert objective.diagnostic_features() == {}
    objective(model, tiny_batch())
    features = objective.diagnostic_features()
    masked = int(objective._last["mask"].sum())
    assert features["predictions"].shape == (masked, D) == features["targets"].shape
    assert features["penultimate"].shape == (160, D) == features["last"].shape
    assert features["pseudo_classes"].shape == (160,) == features["predicted_classes"].shape
    assert not any(x.requires_grad for x in features.values())


# ------------------------------------------------------------------ frozen teacher
def test_frozen_teacher_and_projection_never_change_over_training_steps(tmp_path):
    path = save_teacher_checkpoint(tmp_path / "teacher.pt")
    model = tiny_model()
    objective = TriNet(model.context, teacher=FrozenTeacher(path), **SMALL)
    frozen = {k: v.clone() for k, v in objective.teacher.network.state_dict().items()}
    projection = objective.projection.clone()
    student = [p.detach().clone() for p in model.parameters()]
    params = trainable(model, objective)
    assert not {id(p) for p in params} & {id(p) for p in objective.teacher.network.parameters()}
    assert all(p is not objective.projection for p in objective.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.5)
    for step in range(1, 4):
        out = objective(model, tiny_batch(seed=step))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        objective.after_optimizer_step(model, step)
    for name, value in objective.teacher.network.state_dict().items():
        assert torch.equal(value, frozen[name]), name
    assert torch.equal(objective.projection, projection)
    assert all(p.grad is None for p in objective.teacher.network.parameters())
    assert not objective.teacher.network.training
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), student))


def test_frozen_teacher_is_recorded_by_path_and_hash_not_copied(tmp_path):
    path = save_teacher_checkpoint(tmp_path / "teacher.pt")
    teacher = FrozenTeacher(path, layer="context")
    assert teacher.dim == 12 and teacher.hop == 160
    objective = TriNet(tiny_context(), teacher=teacher, **SMALL)
    record = objective.extra_state()["frozen_teacher"]
    assert record["path"] == str(path.resolve())
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    # Nothing of the teacher's network is in the objective's state.
    teacher_shapes = {tuple(v.shape) for v in teacher.network.state_dict().values()}
    assert not any(k.startswith("teacher") for k in objective.state_dict())
    assert len(objective.state_dict()) == len(TriNet(tiny_context(), **SMALL).state_dict())
    assert teacher_shapes  # (the comparison above is about a real network)
    objective.load_extra_state({"frozen_teacher": record})  # the same file: fine
    with pytest.raises(ValueError, match="changed since the run started"):
        objective.load_extra_state({"frozen_teacher": {**record, "sha256": "0" * 64}})
    with pytest.raises(ValueError, match="objective.teacher.checkpoint="):
        objective.load_extra_state({"frozen_teacher": {**record, "path": "/elsewhere.pt"}})
    with pytest.raises(ValueError, match="log_mel frozen teacher"):
        objective.load_extra_state({"frozen_teacher": {"kind": "log_mel", "n_mels": 80,
                                                       "normalize": True}})
    with pytest.raises(ValueError, match="records no frozen teacher"):
        objective.load_extra_state({})


def test_frozen_teacher_layers_and_missing_files(tmp_path):
    path = save_teacher_checkpoint(tmp_path / "teacher.pt")
    assert FrozenTeacher(path, layer="encoder").dim == 8
    assert FrozenTeacher(path, layer="context.-1").dim == 12
    with pytest.raises(ValueError, match="choose one of encoder, context, context.0"):
        FrozenTeacher(path, layer="context.3")
    with pytest.raises(FileNotFoundError, match="objective.teacher.checkpoint"):
        FrozenTeacher(tmp_path / "gone.pt")
    wav = tiny_batch().wav
    encoder = FrozenTeacher(path, layer="encoder", normalize=False)
    reference = encoder.network.encoder(wav)
    torch.testing.assert_close(encoder.frames(wav, 160, 40), reference)


# ------------------------------------------------------------------ config and training
def small_config(root: Path, run_dir: Path, extra: tuple = ()):
    overrides = [
        "objective=trinet", "data=librispeech", f"data.root={root}",
        f"data.alignments={root}/alignments.txt", "data.train_split=train",
        "data.dev_split=dev", "data.window=3200", "data.batch_size=4", "data.num_workers=0",
        "data.in_memory=true", "encoder.dim=32", "context.dim=32", "context.num_layers=3",
        "context.num_heads=2", "context.ffn_dim=64", "objective.top_k=2",
        "objective.mask_span=4", "objective.min_unmasked=4", "objective.num_classes=8",
        "trainer.max_steps=6", "trainer.log_every=1", "trainer.checkpoint_every=3",
        "trainer.val_every=0", "trainer.progress=false", "trainer.tensorboard=false",
        "trainer.device=cpu", "trainer.diagnostics_every=3", "trainer.diagnostics_steps=2",
        "optim.warmup_steps=2", "probe.enabled=false", f"run_dir={run_dir}", "run_name=test",
        *extra,
    ]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if '"train"' in line]


def test_config_selects_a_bidirectional_transformer_and_builds_trinet():
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["objective=trinet"])
    assert cfg.context.causal is False and cfg.context.num_layers >= cfg.objective.top_k + 1
    assert cfg.objective.teacher.checkpoint is None
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["objective=trinet", "context=lstm"])
    assert cfg.context._target_.endswith("LSTMContext")  # the command line wins


def test_shipped_config_trains_a_step_at_its_default_sizes():
    """``python -m ssl_speech.train objective=trinet`` out of the box: the log-mel teacher,
    the default encoder and context, the default window."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["objective=trinet"])
    torch.manual_seed(0)
    model = SSLModel(instantiate(cfg.encoder), instantiate(cfg.context))
    objective = instantiate(cfg.objective)
    assert objective.teacher.kind == "log_mel" and objective.num_classes == 32
    assert objective.momentum == LinearMomentumSchedule(0.999, 0.9999, 30000)
    batch = tiny_batch(frames=int(cfg.data.window) // 160, batch=2)
    out = objective(model, batch)
    out.loss.backward()
    objective.after_optimizer_step(model, 1)
    assert torch.isfinite(out.loss) and objective.ema.initialized
    assert objective.last_momentum == pytest.approx(0.999 + 0.0009 / 30000)


@pytest.mark.slow
def test_training_checkpoints_the_ema_teacher_resumes_exactly_and_checks_the_teacher(
        tiny_corpus, tmp_path):
    first = tmp_path / "first"
    run(small_config(tiny_corpus, first))
    rows = records(first)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[2]["diag/predictions/effective_rank"] > 1
    assert "diag/pseudo_classes/usage_entropy" in rows[5]
    state = torch.load(ckpt.checkpoint_path(first, 6), weights_only=True)
    assert any(k.startswith("ema.network.") for k in state["objective"])
    assert state["objective_extra"]["frozen_teacher"]["kind"] == "log_mel"

    # Resume from step 3: the same losses as the uninterrupted run (the EMA teacher and its
    # initialised flag come back from the checkpoint).
    last = ckpt.checkpoint_path(first, 6)
    copy = tmp_path / "uninterrupted.pt"
    shutil.copy(last, copy)
    last.unlink()
    last.with_name(last.name + ".sha256").unlink()
    run(small_config(tiny_corpus, first))
    assert [r["loss"] for r in records(first)] == [r["loss"] for r in rows]
    resumed = torch.load(ckpt.checkpoint_path(first, 6), weights_only=True)
    for name, value in torch.load(copy, weights_only=True)["objective"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, resumed["objective"][name]), name

    # The first run as the frozen teacher of a second (a checkpoint of any objective).
    teacher_file = ckpt.checkpoint_path(first, 3)
    second = tmp_path / "second"
    extra = (f"objective.teacher.checkpoint={teacher_file}", "trainer.max_steps=3")
    run(small_config(tiny_corpus, second, extra))
    state = torch.load(ckpt.checkpoint_path(second, 3), weights_only=True)
    record = state["objective_extra"]["frozen_teacher"]
    assert record["path"] == str(teacher_file.resolve())
    assert record["sha256"] == hashlib.sha256(teacher_file.read_bytes()).hexdigest()
    assert not any("encoder" in k for k in state["objective"])

    # The teacher file is replaced by another valid checkpoint: resuming refuses.
    for suffix in ("", ".sha256"):
        shutil.copy(str(ckpt.checkpoint_path(first, 6)) + suffix, str(teacher_file) + suffix)
    extra = (f"objective.teacher.checkpoint={teacher_file}", "trainer.max_steps=6")
    with pytest.raises(ValueError, match="changed since the run started"):
        run(small_config(tiny_corpus, second, extra))


def test_defaults_are_the_shipped_config() -> None:
    assert_defaults_are_the_shipped_config("trinet", TriNet)
