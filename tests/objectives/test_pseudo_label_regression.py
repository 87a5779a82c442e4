"""Pseudo-label regression: targets at the model's frames, masking, statistics, training."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from shipped import assert_defaults_are_the_shipped_config

from ssl_speech.data.batch import Batch
from ssl_speech.nn.context import LSTMContext
from ssl_speech.nn.encoders import CPCEncoder, Wav2Vec2ConvEncoder
from ssl_speech.nn.model import SSLModel
from ssl_speech.objectives.pseudo_label_regression import PseudoLabelRegression
from ssl_speech.signal.pseudo_labels import extract_pseudo_label

SR = 16000


def voiced_then_silent(batch: int = 2, seconds: float = 0.4) -> torch.Tensor:
    """``(B, 1, S)``: a harmonic signal (a different F0 per row), then digital silence."""
    n = int(seconds * SR)
    t = torch.arange(n) / SR
    rows = []
    for b in range(batch):
        f0 = 110.0 + 40.0 * b
        voiced = sum(0.2 / k * torch.sin(2 * math.pi * f0 * k * t) for k in range(1, 6))
        rows.append(torch.cat([voiced, torch.zeros(n)]))
    return torch.stack(rows)[:, None]


def small_model(hop320: bool = False) -> SSLModel:
    torch.manual_seed(0)
    encoder = Wav2Vec2ConvEncoder(dim=16, conv_dim=16) if hop320 else CPCEncoder(dim=16)
    return SSLModel(encoder, LSTMContext(input_dim=16, dim=12))


def batch_of(wav: torch.Tensor) -> Batch:
    return Batch(wav=wav, speaker=torch.zeros(wav.shape[0], dtype=torch.long))


@pytest.mark.parametrize("hop320", [False, True])
@pytest.mark.parametrize("label", ["f0", "rms", "mfcc"])
def test_forward_gives_a_finite_loss_and_gradients(label, hop320):
    model = small_model(hop320)
    objective = PseudoLabelRegression(label, context_dim=12)
    out = objective(model, batch_of(voiced_then_silent()))
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert set(out.metrics) == {"loss/regression", "r2", "defined"}
    out.loss.backward()
    for module in (objective.head, model.encoder, model.context):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    # F0 is undefined in the silent half; the level and cepstra are defined everywhere
    expected = 0.5 if label == "f0" else 1.0
    assert out.metrics["defined"].item() == pytest.approx(expected, abs=0.05)


def test_targets_are_the_extractor_at_the_model_hop():
    wav = voiced_then_silent()
    objective = PseudoLabelRegression("spectral_centroid", context_dim=12)
    for hop in (160, 320):
        z = objective.targets(wav, hop)
        assert z.shape == (2, wav.shape[-1] // hop, 1)
        torch.testing.assert_close(z[..., 0], extract_pseudo_label("spectral_centroid", wav, hop),
                                   equal_nan=True)


def test_undefined_frames_are_left_out_of_the_loss():
    objective = PseudoLabelRegression("f0", context_dim=4).eval()
    objective.target_mean.fill_(100.0)
    objective.target_var.fill_(25.0)
    c = torch.randn(2, 6, 4)
    z = torch.tensor([[100.0, 110.0, math.nan, 90.0, math.nan, 105.0],
                      [math.nan] * 3 + [95.0, 100.0, math.nan]])[..., None]
    out = objective.compute(c, z)
    prediction = objective.head(c)
    defined = z.isfinite()
    expected = ((prediction - (z - 100.0) / 5.0)[defined] ** 2).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert out.metrics["r2"].item() == pytest.approx(1.0 - expected.item(), rel=1e-6)
    assert out.metrics["defined"].item() == pytest.approx(6 / 12)
    # a NaN target never reaches the gradient
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in objective.head.parameters())


def test_l1_loss():
    objective = PseudoLabelRegression("rms", context_dim=4, loss="l1").eval()
    c, z = torch.randn(1, 5, 4), torch.randn(1, 5, 1)
    out = objective.compute(c, z)
    assert out.loss.item() == pytest.approx((objective.head(c) - z).abs().mean().item(), rel=1e-6)


def test_running_statistics_follow_the_targets_in_training_only():
    objective = PseudoLabelRegression("mfcc", context_dim=4, momentum=0.01)
    g = torch.Generator().manual_seed(0)
    mean = torch.linspace(-5.0, 5.0, 13)
    std = torch.linspace(0.5, 3.0, 13)
    for _ in range(50):
        z = mean + std * torch.randn(4, 50, 13, generator=g)
        objective.compute(torch.randn(4, 50, 4), z)
    torch.testing.assert_close(objective.target_mean, mean, atol=0.1, rtol=0.0)
    torch.testing.assert_close(objective.target_var.sqrt(), std, atol=0.1, rtol=0.05)
    assert objective.updates.eq(50).all()
    before = objective.target_mean.clone()
    objective.eval()
    objective.compute(torch.randn(1, 5, 4), torch.full((1, 5, 13), 100.0))
    assert torch.equal(objective.target_mean, before)
    # the statistics are buffers: they travel with the checkpoint
    state = objective.state_dict()
    assert {"target_mean", "target_var", "updates"} <= set(state)
    fresh = PseudoLabelRegression("mfcc", context_dim=4)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.target_mean, before)


def test_a_dimension_never_defined_keeps_its_statistics():
    objective = PseudoLabelRegression("f0", context_dim=4)
    objective.compute(torch.randn(1, 5, 4), torch.full((1, 5, 1), math.nan))
    assert objective.updates.item() == 0
    assert objective.target_mean.item() == 0.0 and objective.target_var.item() == 1.0


def test_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = small_model()
    objective = PseudoLabelRegression("rms", context_dim=12, hidden=16)
    t = torch.arange(4800) / SR
    envelope = (torch.sin(2 * math.pi * 5.0 * t) > 0).float() * 0.5 + 0.01
    wav = (envelope * torch.randn(2, 4800, generator=torch.Generator().manual_seed(1)))[:, None]
    optimizer = torch.optim.Adam([*model.parameters(), *objective.parameters()], lr=3e-3)
    losses = []
    for _ in range(30):
        out = objective(model, batch_of(wav))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert out.metrics["r2"].item() > 0.5


def test_invalid_arguments_name_the_fix():
    with pytest.raises(ValueError, match="objective.label"):
        PseudoLabelRegression("pitch")
    with pytest.raises(ValueError, match="loss"):
        PseudoLabelRegression("rms", loss="huber")
    with pytest.raises(ValueError, match="hidden"):
        PseudoLabelRegression("rms", hidden=0)
    with pytest.raises(ValueError, match="momentum"):
        PseudoLabelRegression("rms", momentum=0.0)
    with pytest.raises(ValueError, match="context"):
        PseudoLabelRegression("rms", context_dim=8).compute(torch.randn(1, 3, 4),
                                                            torch.randn(1, 3, 1))


def test_config_selects_the_candidate_by_name():
    from hydra import compose, initialize_config_dir

    from ssl_speech.config import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["objective=pseudo_label",
                                                       "objective.label=voicing",
                                                       "context.dim=24"])
    objective = instantiate(cfg.objective)
    assert isinstance(objective, PseudoLabelRegression)
    assert objective.label == "voicing" and objective.context_dim == 24


@pytest.mark.slow
def test_trains_end_to_end_and_reloads(tiny_corpus, tmp_path):
    from hydra import compose, initialize_config_dir

    from ssl_speech import load_model
    from ssl_speech.config import config_dir
    from ssl_speech.train.__main__ import run

    overrides = [
        "objective=pseudo_label", "objective.label=f0", "data=librispeech",
        f"data.root={tiny_corpus}", "data.train_split=train", "data.dev_split=dev",
        "data.window=3200", "data.batch_size=4", "data.num_workers=0", "encoder.dim=16",
        "context.dim=16", "trainer.max_steps=4", "trainer.log_every=1",
        "trainer.checkpoint_every=4", "trainer.val_every=2", "trainer.val_batches=1",
        "trainer.progress=false", "trainer.tensorboard=false", "trainer.device=cpu",
        "optim.warmup_steps=1", "probe.enabled=false", f"run_dir={tmp_path / 'run'}",
        "run_name=test",
    ]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    result = run(cfg)
    assert result.step == 4
    assert result.objective.updates.item() == 4  # statistics from the training batches only
    log = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert '"r2"' in log and '"defined"' in log
    reloaded = load_model(tmp_path / "run")
    assert reloaded.config["objective"]["label"] == "f0"


def test_targets_stay_float32_under_mixed_precision():
    wav = voiced_then_silent()
    objective = PseudoLabelRegression("log_mel", context_dim=12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = objective.targets(wav, 160)
    assert z.dtype == torch.float32
    torch.testing.assert_close(z, extract_pseudo_label("log_mel", wav, 160))


def test_defaults_are_the_shipped_config() -> None:
    assert_defaults_are_the_shipped_config("pseudo_label", PseudoLabelRegression)
