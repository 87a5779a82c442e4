"""MGF: disabled scales do no work, the span positives, the targets, crops, config, training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from shipped import assert_defaults_are_the_shipped_config

from ssl_speech.config import config_dir
from ssl_speech.data.batch import Batch
from ssl_speech.nn.context import TransformerContext
from ssl_speech.nn.encoders import CPCEncoder, LogMel
from ssl_speech.nn.masking import SpanMask
from ssl_speech.nn.model import SSLModel
from ssl_speech.objectives.mgf import MGF, disjoint_crops, pool_crops
from ssl_speech.train.__main__ import run

D = 16
# Unit weights: the tests below add the scales' losses up as they are.
UNIT = dict(frame_weight=1.0, phone_weight=1.0, utt_weight=1.0)
SMALL = dict(mask_span=4, min_unmasked=4, n_mels=20, frame_hidden=16, utt_crop=8, utt_gap=2,
             utt_hidden=16, utt_proj_dim=8)


def tiny_model() -> SSLModel:
    context = TransformerContext(D, dim=D, num_layers=1, num_heads=2, ffn_dim=32, dropout=0.0,
                                 causal=False)
    return SSLModel(CPCEncoder(D), context)


def tiny_batch(frames: int = 40, batch: int = 4) -> Batch:
    """Chirps with different pitch per window: some structure for every scale to learn."""
    t = torch.arange(frames * 160) / 16000
    f0 = torch.linspace(150, 400, batch)[:, None]
    wav = torch.sin(2 * math.pi * f0 * t * (1 + 2 * t)) + 0.05 * torch.randn(batch, len(t))
    utt = [f"u{b // 2}" for b in range(batch)]
    return Batch(wav=wav[:, None], speaker=torch.zeros(batch, dtype=torch.long), utt=utt)


def span_mask(starts: list[list[int]], span: int, length: int, z: torch.Tensor) -> SpanMask:
    starts_t = torch.tensor(starts)
    mask = torch.zeros(len(starts), length, dtype=torch.bool)
    for b, row in enumerate(starts):
        for s in row:
            mask[b, s : s + span] = True
    valid = torch.ones_like(starts_t, dtype=torch.bool)
    return SpanMask(z.masked_fill(mask[..., None], 0.0), mask, starts_t, valid, span)


def identity_phone_head(objective: MGF) -> None:
    with torch.no_grad():
        objective.phone_head.weight.copy_(torch.eye(D))
        objective.phone_head.bias.zero_()


def direct_info_nce(queries: torch.Tensor, keys: torch.Tensor, tau: float,
                    excluded: set[tuple[int, int]] = frozenset()) -> tuple[float, float]:
    total, right = 0.0, 0
    for i, q in enumerate(queries):
        scores = {j: float(q @ k / (q.norm() * k.norm())) / tau for j, k in enumerate(keys)
                  if (i, j) not in excluded}
        positive = scores.pop(i)
        total -= positive - math.log(math.exp(positive) + sum(map(math.exp, scores.values())))
        right += positive > max(scores.values())
    return total / len(queries), right / len(queries)


PLANTED_STARTS = [[2, 20], [5, 30], [0, 12]]


def planted(codes: torch.Tensor) -> tuple[torch.Tensor, SpanMask]:
    """Noise everywhere, code ``j`` constant over span ``j`` (spans in reading order)."""
    torch.manual_seed(0)
    z = torch.randn(3, 40, D)
    j = 0
    for b, row in enumerate(PLANTED_STARTS):
        for s in row:
            z[b, s : s + 5] = codes[j]
            j += 1
    return z, span_mask(PLANTED_STARTS, 5, 40, z)


def test_phone_positive_is_the_same_span_in_the_unmasked_encoder_output():
    torch.manual_seed(1)
    codes = torch.randn(6, D)
    z, masked = planted(codes)
    objective = MGF(D, D, frame_weight=0.0, utt_weight=0.0, phone_temperature=0.5,
                    phone_target_norm="none")
    identity_phone_head(objective)
    # An oracle context that sees through the mask: its span pools are exactly the codes.
    out = objective.compute(z, z.clone(), masked)
    assert out.metrics["acc/phone"].item() == 1.0
    expected, _ = direct_info_nce(codes, codes, 0.5)
    assert out.metrics["loss/phone"].item() == pytest.approx(expected, rel=1e-5)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("norm", ["center", "instance"])
def test_phone_targets_are_normalised_over_the_window(norm):
    torch.manual_seed(2)
    z = 3.0 + 2.0 * torch.randn(2, 40, D)
    objective = MGF(D, D, frame_weight=0.0, utt_weight=0.0, phone_target_norm=norm)
    targets = objective._phone_targets(z)
    torch.testing.assert_close(targets.mean(dim=1), torch.zeros(2, D), atol=1e-5, rtol=0)
    if norm == "instance":
        std = targets.square().mean(dim=1).sqrt()
        torch.testing.assert_close(std, torch.ones(2, D), atol=1e-4, rtol=0)
    else:
        torch.testing.assert_close(targets, z - z.mean(dim=1, keepdim=True))
    # The keys of the span InfoNCE are the normalised targets, pooled: an oracle context that
    # outputs them scores every span, the raw (all-positive, shared-mean) z does not.
    codes = torch.randn(6, D)
    planted_z, masked = planted(codes)
    shifted = planted_z + 5.0
    identity_phone_head(objective)
    oracle = objective._phone_targets(shifted)
    assert objective.compute(shifted, oracle, masked).metrics["acc/phone"].item() == 1.0
    raw = MGF(D, D, frame_weight=0.0, utt_weight=0.0, phone_target_norm="none")
    identity_phone_head(raw)
    assert raw.compute(shifted, oracle, masked).metrics["loss/phone"].item() > (
        objective.compute(shifted, oracle, masked).metrics["loss/phone"].item()
    )


def test_planted_identical_spans_tie_and_only_they_are_missed():
    torch.manual_seed(1)
    codes = torch.randn(6, D)
    codes[3] = codes[0]  # span 0 of window 0 and span 1 of window 1 hold the same content
    z, masked = planted(codes)
    objective = MGF(D, D, frame_weight=0.0, utt_weight=0.0, phone_temperature=0.1,
                    phone_target_norm="none")
    identity_phone_head(objective)
    out = objective.compute(z, z.clone(), masked)
    # The two twins score a tie with each other; every other span still finds itself.
    assert out.metrics["acc/phone"].item() == pytest.approx(4 / 6)
    expected, _ = direct_info_nce(codes, codes, 0.1)
    assert out.metrics["loss/phone"].item() == pytest.approx(expected, rel=1e-5)
    # A context off by one frame no longer pools the planted spans.
    shifted = objective.compute(z, z.roll(1, dims=1), masked)
    assert shifted.metrics["loss/phone"].item() > out.metrics["loss/phone"].item()


def test_overlapping_spans_of_one_window_are_not_negatives():
    torch.manual_seed(2)
    z, c = torch.randn(2, 30, D), torch.randn(2, 30, D)
    starts = [[2, 4, 20], [3, 12, 15]]  # (2, 4) and (12, 15) overlap; 20 and 15 do not
    masked = span_mask(starts, 5, 30, z)
    objective = MGF(D, D, frame_weight=0.0, utt_weight=0.0, phone_temperature=0.2,
                    phone_target_norm="none")
    identity_phone_head(objective)
    out = objective.compute(z, c, masked)
    flat = [(b, s) for b, row in enumerate(starts) for s in row]
    queries = torch.stack([c[b, s : s + 5].mean(0) for b, s in flat])
    keys = torch.stack([z[b, s : s + 5].mean(0) for b, s in flat])
    excluded = {(i, j) for i, (bi, si) in enumerate(flat) for j, (bj, sj) in enumerate(flat)
                if i != j and bi == bj and abs(si - sj) < 5}
    assert excluded == {(0, 1), (1, 0), (4, 5), (5, 4)}
    expected, accuracy = direct_info_nce(queries, keys, 0.2, excluded)
    assert out.metrics["loss/phone"].item() == pytest.approx(expected, rel=1e-5)
    assert out.metrics["acc/phone"].item() == pytest.approx(accuracy)


HEADS = {"frame": "frame_head", "phone": "phone_head", "utt": "utt_head"}


@pytest.mark.parametrize("disabled", [("frame",), ("phone",), ("utt",), ("phone", "utt"),
                                      ("frame", "utt"), ("frame", "phone")])
def test_zero_weights_remove_their_scales(disabled, monkeypatch):
    """Any weight may be 0, alone or with another (the ablation's single scales)."""
    torch.manual_seed(0)
    model = tiny_model()
    objective = MGF(D, D, **{**UNIT, **{f"{scale}_weight": 0.0 for scale in disabled}}, **SMALL)
    for scale in disabled:
        assert getattr(objective, HEADS[scale]) is None
        assert not [n for n, _ in objective.named_parameters() if n.startswith(HEADS[scale])]
    if "frame" in disabled:
        assert objective.log_mel is None

        def no_log_mel(*args, **kwargs):
            raise AssertionError("the log-mel target was computed with frame_weight=0")

        monkeypatch.setattr(LogMel, "forward", no_log_mel)
    out = objective(model, tiny_batch())
    enabled = [s for s in HEADS if s not in disabled]
    assert not {f"loss/{s}" for s in disabled} & set(out.metrics)
    assert {f"loss/{s}" for s in enabled} <= set(out.metrics)
    expected = sum(out.metrics[f"loss/{s}"] for s in enabled)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    out.loss.backward()
    # Every parameter that exists takes part: DDP needs no find_unused_parameters.
    for name, p in [*model.named_parameters(), *objective.named_parameters()]:
        assert p.grad is not None, name


def test_every_head_gets_gradient_when_all_scales_are_on():
    torch.manual_seed(0)
    model, objective = tiny_model(), MGF(D, D, **SMALL)
    out = objective(model, tiny_batch())
    assert {"loss/frame", "loss/phone", "loss/utt", "acc/phone", "acc/utt", "frame/r2",
            "mask/fraction", "mask/spans", "acc"} <= set(out.metrics)
    # The default weights: 1, 1 and 0.1 (configs/objective/mgf.yaml).
    expected = (out.metrics["loss/frame"] + out.metrics["loss/phone"]
                + 0.1 * out.metrics["loss/utt"])
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    out.loss.backward()
    for name in HEADS.values():
        grads = [p.grad for p in getattr(objective, name).parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name


def test_weights_scale_the_terms():
    model = tiny_model()
    objective = MGF(D, D, frame_weight=0.5, phone_weight=2.0, utt_weight=0.25, **SMALL)
    torch.manual_seed(3)
    out = objective(model, tiny_batch())
    m = out.metrics
    expected = 0.5 * m["loss/frame"] + 2.0 * m["loss/phone"] + 0.25 * m["loss/utt"]
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.slow
def test_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    model, objective = tiny_model(), MGF(D, D, **SMALL)
    batch = tiny_batch()
    params = [*model.parameters(), *objective.parameters()]
    optimizer = torch.optim.Adam(params, lr=3e-3)
    history = []
    for _ in range(30):
        torch.manual_seed(1)  # the same masks and crops every step
        out = objective(model, batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        history.append({"loss": out.loss.item(), **{k: v.item() for k, v in out.metrics.items()}})
    first, last = history[0], history[-1]
    assert last["loss"] < 0.7 * first["loss"], [h["loss"] for h in history]
    for term in ("loss/frame", "loss/phone", "loss/utt"):
        assert last[term] < 0.95 * first[term], term


def test_frame_targets_follow_the_encoder_hop():
    objective = MGF(D, D, n_mels=20)
    wav = torch.randn(2, 1, 6400)
    mel = LogMel(20)(wav)
    torch.testing.assert_close(objective.frame_targets(wav, 160, 40), mel)
    pooled = objective.frame_targets(wav, 320, 20)
    torch.testing.assert_close(pooled, (mel[:, 0::2] + mel[:, 1::2]) / 2)
    with pytest.raises(ValueError, match="multiple"):
        objective.frame_targets(wav, 240, 26)


def test_short_windows_are_rejected_with_the_window_to_use():
    objective = MGF(D, D, **SMALL)  # needs max(4 + 4, 2 * 8 + 2) = 18 frames
    assert objective.min_frames() == 18
    with pytest.raises(ValueError, match="data.window >= 2880"):
        objective(tiny_model(), tiny_batch(frames=12))


def test_disjoint_crops_never_overlap_and_reach_both_ends():
    generator = torch.Generator().manual_seed(0)
    starts = disjoint_crops(5000, 40, crop=10, gap=3, generator=generator)
    assert (starts[:, 1] - starts[:, 0] >= 13).all()
    assert starts.min() == 0 and (starts[:, 1] + 10).max() == 40
    with pytest.raises(ValueError, match="need 23 frames"):
        disjoint_crops(2, 22, crop=10, gap=3)
    features = torch.randn(2, 40, 3)
    pooled = pool_crops(features, starts[:2], 10)
    torch.testing.assert_close(pooled[1, 1], features[1, starts[1, 1] : starts[1, 1] + 10].mean(0))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(frame_weight=0.0, phone_weight=0.0, utt_weight=0.0), "all 0"),
        (dict(phone_weight=-1.0), "phone_weight"),
        (dict(utt_temperature=0.0), "utt_temperature"),
        (dict(mask_prob=0.0), "mask_prob"),
        (dict(phone_target_norm="batch"), "phone_target_norm"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MGF(D, D, **kwargs)


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_config_selects_its_encoder_and_context_unless_told_otherwise():
    cfg = _compose(["objective=mgf"])
    assert cfg.hydra.runtime.choices.context == "bitransformer"
    assert cfg.hydra.runtime.choices.encoder == "logmel"
    assert cfg.context.causal is False
    assert cfg.hydra.runtime.choices.optim == "adamw_transformer"
    assert cfg.optim.optimizer.lr == pytest.approx(3e-4)
    assert _compose(["objective=mgf", "optim=adam"]).optim.optimizer._target_.endswith(".Adam")
    assert _compose(["objective=cpc"]).optim.optimizer.lr == pytest.approx(1e-3)
    assert _compose(["objective=mgf", "context=lstm"]).context._target_.endswith("LSTMContext")
    assert _compose(["encoder=cpc", "objective=mgf"]).encoder._target_.endswith("CPCEncoder")
    other = _compose(["objective=cpc"]).hydra.runtime.choices
    assert (other.context, other.encoder) == ("lstm", "logmel")
    cfg.hydra = None  # instantiate only the run's parts
    model = SSLModel(instantiate(cfg.encoder), instantiate(cfg.context))
    objective = instantiate(cfg.objective)
    assert isinstance(objective, MGF) and objective.masker.span == 10
    out = objective(model, tiny_batch(frames=128, batch=2))
    assert torch.isfinite(out.loss)


@pytest.mark.slow
def test_training_run_logs_every_scale(tiny_corpus, tmp_path):
    run_dir = tmp_path / "run"
    overrides = [
        "objective=mgf", "data=librispeech", f"data.root={tiny_corpus}",
        f"data.alignments={tiny_corpus}/alignments.txt", "data.train_split=train",
        "data.dev_split=dev", "data.window=3200", "data.batch_size=4", "encoder.dim=32",
        "context.dim=32", "context.num_layers=1", "context.ffn_dim=64",
        "objective.mask_span=5", "objective.min_unmasked=5", "objective.utt_crop=8",
        "objective.utt_gap=2", "trainer.max_steps=4", "trainer.log_every=1",
        "trainer.checkpoint_every=4", "trainer.val_every=4", "trainer.val_batches=2",
        "trainer.progress=false", "trainer.tensorboard=false", "trainer.device=cpu",
        "probe.enabled=false", f"run_dir={run_dir}", "run_name=test",
    ]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    result = run(cfg)
    assert result.step == 4
    records = [json.loads(x) for x in Path(run_dir, "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"]
    assert len(train) == 4 and len(val) == 1
    for record in (train[-1], val[0]):
        for key in ("loss/frame", "loss/phone", "loss/utt", "acc/phone", "acc/utt", "acc"):
            assert math.isfinite(record[key]), key


def test_defaults_are_the_shipped_config() -> None:
    assert_defaults_are_the_shipped_config("mgf", MGF)


def test_frame_scale_is_the_l1_error_on_masked_frames_only():
    """By hand: a linear head that copies two channels of c, a log-mel target of ones."""
    objective = MGF(4, 4, phone_weight=0.0, utt_weight=0.0, n_mels=2, frame_hidden=0)
    with torch.no_grad():
        objective.frame_head.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
        objective.frame_head.bias.zero_()
    t = torch.arange(4.0)
    c = torch.stack([t, 2 * t, torch.zeros(4), torch.zeros(4)], dim=-1)[None]  # (1, 4, 4)
    z = torch.zeros(1, 4, 4)
    masked = span_mask([[0, 2]], 1, 4, z)  # frames 0 and 2 masked
    log_mel = torch.ones(1, 4, 2)
    # Frame 0 predicts (0, 0), frame 2 predicts (2, 4): |errors| 1, 1, 1, 3, mean 1.5. With the
    # unmasked frames 1 and 3 ((1, 2) and (3, 6)) it would be 1.75.
    out = objective.compute(z, c, masked, log_mel=log_mel)
    assert out.metrics["loss/frame"].item() == pytest.approx(1.5)
    assert out.loss.item() == pytest.approx(1.5)
    # Whatever the unmasked frames' context and targets are, the loss stays.
    c_other, log_mel_other = c.clone(), log_mel.clone()
    c_other[0, [1, 3]] = 100.0
    log_mel_other[0, [1, 3]] = -50.0
    out = objective.compute(z, c_other, masked, log_mel=log_mel_other)
    assert out.metrics["loss/frame"].item() == pytest.approx(1.5)
    # R² = 1 − MSE / mean square of the target, on the masked frames: 1 − (1+1+1+9)/4 / 1.
    assert out.metrics["frame/r2"].item() == pytest.approx(1 - 3.0)
