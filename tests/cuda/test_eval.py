"""The ABX evaluation and the phone probe on the device equal the CPU."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_speech.data.labels import AbxItem
from ssl_speech.eval.abx import abx_scores
from ssl_speech.eval.phone_probe import train_phone_probe

pytestmark = pytest.mark.cuda

STEP = 0.01


def abx_corpus(seed: int = 0, speakers: int = 4, phones: int = 3, utts: int = 2,
               per_utt: int = 20, dim: int = 8):
    """Random phone sequences (2–9 frames a phone) whose frames lean towards their phone's
    mean: an error well between 0 and 50 %, so both sides really rank distances."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(phones, dim))
    feats, items = {}, []
    for s in range(speakers):
        for u in range(utts):
            utt = f"s{s}_u{u}"
            seq = rng.integers(0, phones, per_utt)
            ends = np.cumsum(rng.integers(2, 10, per_utt))
            starts = ends - np.diff(ends, prepend=0)
            frames = 0.7 * means[np.repeat(seq, ends - starts)]
            feats[utt] = (frames + rng.normal(size=frames.shape)).astype(np.float32)
            for k in range(1, per_utt - 1):
                items.append(AbxItem(utt, starts[k] * STEP, ends[k] * STEP, f"p{seq[k]}",
                                     f"p{seq[k - 1]}", f"p{seq[k + 1]}", f"spk{s}"))
    return feats, items


def test_abx_on_the_device_equals_the_cpu(device):
    feats, items = abx_corpus()
    expected = abx_scores(feats, items, STEP, device="cpu")
    got = abx_scores(feats, items, STEP, device=device)
    assert 5 < expected.errors["within"] < 45 and 5 < expected.errors["across"] < 45
    for mode in ("within", "across"):
        assert got.scores[mode].num_groups == expected.scores[mode].num_groups > 0
        # Near-ties of two angular distances could order differently in the last bit;
        # with continuous random features none is expected, so the errors agree closely.
        assert got.errors[mode] == pytest.approx(expected.errors[mode], abs=1e-6), mode


def probe_corpus(seed: int, utts: int, frames: int = 120, classes: int = 5, dim: int = 10):
    rng = np.random.default_rng(seed)
    labels, feats = {}, {}
    for i in range(utts):
        lab = np.repeat(rng.integers(0, classes, frames // 6), 6)
        x = rng.normal(scale=0.8, size=(lab.shape[0], dim)).astype(np.float32)
        x[np.arange(lab.shape[0]), lab] += 1.0
        labels[f"u{seed}_{i}"], feats[f"u{seed}_{i}"] = lab, x
    return feats, labels


def test_phone_probe_on_the_device_equals_the_cpu(device, no_tf32):
    train, test = probe_corpus(0, 12), probe_corpus(1, 6)
    args = dict(epochs=3, lr=1e-2, batch_size=256, hidden=16, seed=0)
    expected = train_phone_probe(*train, {"test": test}, device="cpu", **args)["test"]
    got = train_phone_probe(*train, {"test": test}, device=device, **args)["test"]
    assert 0.3 < expected.accuracy < 0.99  # neither chance nor solved: predictions matter
    np.testing.assert_allclose(got.loss_history, expected.loss_history, rtol=1e-4)
    assert got.num_frames == expected.num_frames
    # A frame whose two best classes score within float error could flip; allow one in 700.
    assert np.abs(got.confusion - expected.confusion).sum() <= 2
    assert got.accuracy == pytest.approx(expected.accuracy, abs=2 / expected.num_frames)
