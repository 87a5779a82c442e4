"""Speaker probe: pooling, held-out split, accuracy on speaker-coded and random features."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_speech.eval.speaker_probe import (
    held_out_utterance_split,
    pool_features,
    train_speaker_probe,
)

S = 8  # speakers
D = 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _utterances(seed: int, per_speaker: int, speaker_shift: float):
    """Frames ~ N(mu_speaker * speaker_shift, 1) of random length; ids ``spk{s}_{i}``."""
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(100).normal(size=(S, D))  # fixed across sets
    feats, speakers = {}, {}
    for s in range(S):
        for i in range(per_speaker):
            utt = f"spk{s}_{seed}_{i}"
            frames = int(rng.integers(20, 60))
            feats[utt] = (speaker_shift * means[s] + rng.normal(size=(frames, D))).astype(
                np.float32
            )
            speakers[utt] = f"spk{s}"
    return feats, speakers


def test_probe_identifies_speaker_specific_means():
    train, test = _utterances(0, 12, 1.0), _utterances(1, 5, 1.0)
    res = train_speaker_probe(*train, {"test": test}, epochs=30, lr=1e-2, batch_size=16)["test"]
    assert res.num_utterances == S * 5 and res.num_speakers == S
    assert res.accuracy > 0.97, res.accuracy
    assert res.train_accuracy > 0.97
    assert res.chance == pytest.approx(1 / S)


def test_probe_is_at_chance_on_noise():
    # No speaker information: every classifier scores 1/S in expectation on a balanced test set.
    # With 8 x 30 = 240 test utterances the standard deviation is sqrt(p (1 - p) / 240) = 0.021,
    # so 0.1 is more than 4.5 standard deviations.
    train, test = _utterances(2, 30, 0.0), _utterances(3, 30, 0.0)
    res = train_speaker_probe(*train, {"test": test}, epochs=10, lr=1e-2, batch_size=16)["test"]
    assert abs(res.accuracy - 1 / S) < 0.1, res.accuracy


def test_mean_std_pooling_sees_a_variance_difference():
    # Same means, speaker-specific spread: invisible to mean pooling, visible to mean_std.
    rng = np.random.default_rng(4)
    def make(n: int):
        feats, spk = {}, {}
        for s in range(2):
            for i in range(n):
                feats[f"{s}_{i}_{n}"] = (rng.normal(size=(40, 4)) * (1 + 2 * s)).astype(np.float32)
                spk[f"{s}_{i}_{n}"] = s
        return feats, spk
    train, test = make(20), make(10)
    kwargs = dict(epochs=30, lr=1e-2, batch_size=8)
    with_std = train_speaker_probe(*train, {"t": test}, pooling="mean_std", **kwargs)["t"]
    assert with_std.accuracy > 0.95
    mean_only = train_speaker_probe(*train, {"t": test}, pooling="mean", **kwargs)["t"]
    assert mean_only.accuracy < 0.85


def test_pool_features_shapes_and_values():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_allclose(pool_features(x, "mean"), x.mean(0))
    np.testing.assert_allclose(pool_features(x, "last"), x[-1])
    np.testing.assert_allclose(pool_features(x, "mean_std"), np.concatenate([x.mean(0), x.std(0)]))
    with pytest.raises(ValueError, match="unknown pooling"):
        pool_features(x, "max")
    with pytest.raises(ValueError, match="at least one frame"):
        pool_features(np.zeros((0, 3)), "mean")


def test_test_speaker_absent_from_training_is_an_error():
    train, test = _utterances(5, 3, 1.0), _utterances(6, 1, 1.0)
    feats, speakers = test
    speakers = dict(speakers)
    speakers[next(iter(speakers))] = "stranger"
    with pytest.raises(ValueError, match="1 speakers never occur in training: \\['stranger'\\]"):
        train_speaker_probe(*train, {"test": (feats, speakers)}, epochs=1)


def test_held_out_utterance_split():
    speakers = {f"{s}-{i}": s for s in ("a", "b") for i in range(10)}
    speakers["c-0"] = "c"  # a single utterance stays in training
    train, test = held_out_utterance_split(speakers, test_fraction=0.2, seed=0)
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(speakers)
    assert sorted(speakers[u] for u in test) == ["a", "a", "b", "b"]
    assert "c-0" in train
    assert held_out_utterance_split(speakers, 0.2, seed=0) == (train, test)
    assert held_out_utterance_split(speakers, 0.2, seed=1) != (train, test)
