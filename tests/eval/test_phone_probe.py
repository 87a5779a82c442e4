"""Phone probe: alignment of frame steps, accuracy on separable and random features."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_speech.eval.phone_probe import IGNORE_INDEX, align_features_and_labels, train_phone_probe
from ssl_speech.eval.probe_training import Stopping

C = 6  # classes
D = 12  # feature dim (> C: one-hot block plus distractor dimensions)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _segment_labels(rng: np.random.Generator, frames: int) -> np.ndarray:
    """Phone-like labels: runs of 3-12 frames of one class."""
    out = []
    while len(out) < frames:
        out += [int(rng.integers(C))] * int(rng.integers(3, 13))
    return np.array(out[:frames], dtype=np.int64)


def _encode(rng: np.random.Generator, labels: np.ndarray, noise: float = 0.1) -> np.ndarray:
    """Features that encode the label: one-hot in the first C dims plus Gaussian noise."""
    x = rng.normal(scale=noise, size=(labels.shape[0], D)).astype(np.float32)
    x[np.arange(labels.shape[0]), labels] += 1.0
    return x


def _corpus(seed: int, n_utt: int, frames: int = 150):
    rng = np.random.default_rng(seed)
    labels = {f"utt{seed}_{i}": _segment_labels(rng, frames) for i in range(n_utt)}
    feats = {u: _encode(rng, lab) for u, lab in labels.items()}
    return feats, labels


def test_probe_solves_features_that_encode_the_label():
    train = _corpus(0, 20)
    test = _corpus(1, 6)
    other = _corpus(2, 4)
    res = train_phone_probe(*train, {"test": test, "other": other}, epochs=5, lr=1e-2,
                            batch_size=256)
    for name in ("test", "other"):
        r = res[name]
        assert r.accuracy > 0.99, (name, r.accuracy)
        assert r.num_frames == sum(len(v) for v in (test if name == "test" else other)[1].values())
        assert r.num_ignored == 0
        assert r.confusion.shape == (C, C)
        assert r.confusion.sum() == r.num_frames
        assert set(r.per_class) == set(range(C))
        assert min(r.per_class.values()) > 0.95
    assert res["test"].train_accuracy > 0.99
    assert res["test"].epochs == 5 and len(res["test"].loss_history) == 5
    assert res["test"].loss_history[-1] < res["test"].loss_history[0]


def test_probe_is_at_chance_on_noise():
    # Labels independent of the features: any classifier scores 1/C in expectation when the
    # labels are uniform and i.i.d.; with N test frames the standard deviation is
    # sqrt(p (1 - p) / N) = 0.0065 for N = 4000, so 0.035 is more than 5 standard deviations.
    rng = np.random.default_rng(3)
    def noise_set(prefix: str, n_utt: int):
        lab = {f"{prefix}{i}": rng.integers(0, C, 200) for i in range(n_utt)}
        feats = {u: rng.normal(size=(200, D)).astype(np.float32) for u in lab}
        return feats, lab
    train, test = noise_set("tr", 40), noise_set("te", 20)
    r = train_phone_probe(*train, {"test": test}, epochs=3, lr=1e-2, batch_size=256)["test"]
    assert r.num_frames == 4000
    assert abs(r.accuracy - 1 / C) < 0.035, r.accuracy
    assert abs(r.chance - 1 / C) < 0.035


def test_hidden_layer_solves_xor_that_the_linear_probe_cannot():
    # Label = XOR of the signs of two coordinates. A linear classifier gets at most 3 of the 4
    # quadrant clusters right (75 %); one ReLU hidden layer separates them all.
    rng = np.random.default_rng(4)
    def xor_set(n_utt: int):
        feats, labels = {}, {}
        for i in range(n_utt):
            signs = rng.choice([-1.0, 1.0], size=(200, 2))
            feats[f"x{i}"] = (signs + rng.normal(scale=0.15, size=signs.shape)).astype(np.float32)
            labels[f"x{i}"] = (signs[:, 0] != signs[:, 1]).astype(np.int64)
        return feats, labels
    train, test = xor_set(20), xor_set(5)
    kwargs = dict(epochs=15, lr=1e-2, batch_size=128)
    linear = train_phone_probe(*train, {"test": test}, **kwargs)["test"]
    mlp = train_phone_probe(*train, {"test": test}, hidden=32, **kwargs)["test"]
    assert linear.accuracy < 0.8, linear.accuracy
    assert mlp.accuracy > 0.97, mlp.accuracy


def test_ignored_and_unseen_labels_are_counted_not_scored():
    train = _corpus(5, 10)
    feats, labels = _corpus(6, 3)
    labels = {u: lab.copy() for u, lab in labels.items()}
    first = next(iter(labels))
    labels[first][:10] = IGNORE_INDEX
    labels[first][10:14] = C  # a class the training set never has
    res = train_phone_probe(*train, {"test": (feats, labels)}, num_classes=C + 1, epochs=5,
                            lr=1e-2, batch_size=64)["test"]
    total = sum(len(v) for v in labels.values())
    assert res.num_ignored == 14
    assert res.num_frames == total - 14
    assert res.confusion.sum() == res.num_frames
    assert res.unseen_classes == [C]
    assert C not in res.per_class
    assert res.accuracy > 0.99


def test_training_labels_minus_100_are_skipped():
    feats, labels = _corpus(7, 8)
    labels = {u: lab.copy() for u, lab in labels.items()}
    for lab in labels.values():
        lab[::2] = IGNORE_INDEX
    res = train_phone_probe(feats, labels, {"test": _corpus(8, 3)}, epochs=5, lr=1e-2,
                            batch_size=64)["test"]
    assert res.train_frames == sum(int((lab >= 0).sum()) for lab in labels.values())
    assert res.accuracy > 0.99


def test_bad_labels_are_rejected():
    feats, labels = _corpus(9, 2)
    bad = {u: np.full_like(lab, -1) for u, lab in labels.items()}
    with pytest.raises(ValueError, match="labels must be >= 0 or -100"):
        train_phone_probe(feats, bad, {}, epochs=1)
    with pytest.raises(ValueError, match="num_classes=3"):
        train_phone_probe(feats, labels, {}, num_classes=3, epochs=1)
    short = {u: lab[:-5] for u, lab in labels.items()}
    with pytest.raises(ValueError, match="pass frame_step"):
        train_phone_probe(feats, short, {}, epochs=1)


def test_twenty_ms_features_take_the_centre_label():
    rng = np.random.default_rng(10)
    labels = {"a": _segment_labels(rng, 998), "b": _segment_labels(rng, 601)}
    # 20 ms frames: 998 // 2 = 499 and 601 // 2 = 300 frames (one frame short of the labels).
    feats = {"a": np.zeros((499, 3), np.float32), "b": np.zeros((300, 3), np.float32)}
    f, lab = align_features_and_labels(feats, labels, frame_step=0.02)
    assert f["a"].shape == (499, 3) and lab["a"].shape == (499,)
    np.testing.assert_array_equal(lab["a"], labels["a"][1::2])
    assert lab["b"].shape == (300,) and f["b"].shape == (300, 3)
    np.testing.assert_array_equal(lab["b"], labels["b"][1:601:2])


def test_twenty_ms_probe_end_to_end():
    rng = np.random.default_rng(11)
    def make(prefix: str, n: int):
        labels = {f"{prefix}{i}": _segment_labels(rng, 300) for i in range(n)}
        feats = {u: _encode(rng, lab[1::2]) for u, lab in labels.items()}  # 150 frames at 20 ms
        return align_features_and_labels(feats, labels, frame_step=0.02)
    res = train_phone_probe(*make("tr", 20), {"test": make("te", 5)}, epochs=5, lr=1e-2,
                            batch_size=256)["test"]
    assert res.num_frames == 5 * 150
    assert res.accuracy > 0.99


def test_probe_aligns_when_given_the_frame_step():
    rng = np.random.default_rng(12)
    def make(prefix: str, n: int):
        labels = {f"{prefix}{i}": _segment_labels(rng, 301) for i in range(n)}
        return {u: _encode(rng, lab[1::2]) for u, lab in labels.items()}, labels
    train, test = make("tr", 20), make("te", 5)
    with pytest.raises(ValueError, match="pass frame_step=0.02"):
        train_phone_probe(*train, {"test": test}, frame_step=0.01, epochs=1)
    res = train_phone_probe(*train, {"test": test}, frame_step=0.02, epochs=5, lr=1e-2,
                            batch_size=256)["test"]
    assert res.num_frames == 5 * 150
    assert res.accuracy > 0.99


def test_finer_features_repeat_the_labels():
    labels = {"a": np.array([1, 2, 3])}
    _, lab = align_features_and_labels({"a": np.zeros((6, 2))}, labels, frame_step=0.005)
    np.testing.assert_array_equal(lab["a"], [1, 1, 2, 2, 3, 3])


def test_wrong_frame_step_names_utterance_counts_and_fix():
    labels = {"utt-a": np.zeros(998, np.int64), "utt-b": np.zeros(400, np.int64)}
    feats = {"utt-a": np.zeros((499, 4), np.float32), "utt-b": np.zeros((200, 4), np.float32)}
    with pytest.raises(ValueError) as err:
        align_features_and_labels(feats, labels, frame_step=0.01)
    msg = str(err.value)
    assert "2 of 2 utterances" in msg
    assert "'utt-a'" in msg and "499 feature frames" in msg and "998 label frames" in msg
    assert "pass frame_step=0.02" in msg


def test_small_offsets_are_trimmed_and_large_ones_explained():
    labels = {"u": np.arange(100) % C}
    f, lab = align_features_and_labels({"u": np.zeros((102, 2))}, labels, frame_step=0.01)
    assert f["u"].shape[0] == 100 and lab["u"].shape[0] == 100
    f, lab = align_features_and_labels({"u": np.zeros((98, 2))}, labels, frame_step=0.01)
    np.testing.assert_array_equal(lab["u"], labels["u"][:98])
    with pytest.raises(ValueError, match=r"'u': 94 feature frames .* 100 label frames") as err:
        align_features_and_labels({"u": np.zeros((94, 2))}, labels, frame_step=0.01)
    assert "off by -6 frames" in str(err.value)
    assert "frame offset" in str(err.value)


def test_missing_utterance_ids_are_reported():
    labels = {"103-1240-0000": np.zeros(50, np.int64)}
    feats = {"103/1240/103-1240-0000": np.zeros((50, 2)), "103-1240-0000": np.zeros((50, 2))}
    with pytest.raises(ValueError) as err:
        align_features_and_labels(feats, labels, frame_step=0.01)
    msg = str(err.value)
    assert "1 of 2 feature utterances have no labels" in msg
    assert "'103/1240/103-1240-0000'" in msg and "'103-1240-0000'" in msg


def test_non_integer_step_ratio_is_rejected():
    with pytest.raises(ValueError, match="not an integer multiple"):
        align_features_and_labels({"u": np.zeros((10, 2))}, {"u": np.zeros(15)}, 0.015)


def _code_corpus(seed: int, utts: int, scale: np.ndarray, offset: np.ndarray):
    """Utterances whose frames are an affine copy of a noisy one-hot code of their labels."""
    rng = np.random.default_rng(seed)
    feats, labels = {}, {}
    for i in range(utts):
        y = rng.integers(0, C, 40)
        code = np.eye(C, D)[y] + 0.3 * rng.standard_normal((40, D))
        feats[f"u{seed}_{i}"] = (code * scale + offset).astype(np.float32)
        labels[f"u{seed}_{i}"] = y
    return feats, labels


def test_the_converged_probe_does_not_depend_on_the_feature_scale():
    accuracies = []
    for scale, offset in [(1.0, 0.0), (1e-3, 50.0), (300.0, -7.0)]:
        dims = np.geomspace(0.5, 2.0, D) * scale  # and differently per dimension
        train = _code_corpus(0, 30, dims, offset)
        test = _code_corpus(1, 10, dims, offset)
        res = train_phone_probe(*train, {"test": test}, epochs=60, lr=2e-2, batch_size=128,
                                validation_fraction=0.2, stopping=Stopping(patience=4),
                                seed=3)["test"]
        assert res.converged and res.validation_accuracy is not None
        assert res.epochs < 60 and len(res.loss_history) == res.epochs
        accuracies.append(res.accuracy)
    assert accuracies[0] > 0.95  # the code is separable, and the probe got there
    assert accuracies == pytest.approx([accuracies[0]] * 3, abs=2.5e-3)  # one frame in 400


def test_cpc_audio_schedule_without_standardisation_depends_on_the_scale():
    # why the converged protocol exists: at 2e-4 for 10 epochs, raw features far from unit
    # scale are under-trained
    results = []
    for scale in (1.0, 1e-3):
        train = _code_corpus(0, 30, np.full(D, scale), 0.0)
        test = _code_corpus(1, 10, np.full(D, scale), 0.0)
        results.append(train_phone_probe(*train, {"test": test}, epochs=10, lr=2e-4,
                                         batch_size=8, standardize=False)["test"].accuracy)
    assert results[0] > results[1] + 0.2


def test_a_stopping_rule_needs_a_held_out_part():
    train = _code_corpus(0, 4, np.ones(D), 0.0)
    with pytest.raises(ValueError, match="go together"):
        train_phone_probe(*train, {}, stopping=Stopping())
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        train_phone_probe(*train, {}, validation_fraction=1.5, stopping=Stopping())


def test_streaming_equals_in_memory(tmp_path):
    train = _code_corpus(0, 12, np.ones(D), 0.0)
    test = _code_corpus(1, 4, np.ones(D), 0.0)
    kwargs = dict(epochs=8, lr=1e-2, batch_size=64, seed=5, validation_fraction=0.25,
                  stopping=Stopping(patience=2))
    memory = train_phone_probe(*train, {"test": test}, **kwargs)["test"]
    stream = train_phone_probe(*train, {"test": test}, frame_store=str(tmp_path / "store"),
                               **kwargs)["test"]
    assert stream.loss_history == memory.loss_history
    assert stream.accuracy == memory.accuracy and stream.epochs == memory.epochs
    np.testing.assert_array_equal(stream.confusion, memory.confusion)
    assert (tmp_path / "store" / "frames.bin").stat().st_size == 12 * 40 * D * 4


def test_float16_rows_give_the_float32_result_within_rounding(tmp_path):
    train = _code_corpus(0, 12, np.ones(D), 0.0)
    test = _code_corpus(1, 4, np.ones(D), 0.0)
    kwargs = dict(epochs=5, lr=1e-2, batch_size=64, seed=5)
    full = train_phone_probe(*train, {"test": test}, **kwargs)["test"]
    half = train_phone_probe(*train, {"test": test}, frame_store=str(tmp_path / "s"),
                             store_dtype="float16", **kwargs)["test"]
    assert (tmp_path / "s" / "frames.bin").stat().st_size == 12 * 40 * D * 2
    assert half.accuracy == pytest.approx(full.accuracy, abs=0.01)
    assert half.loss_history == pytest.approx(full.loss_history, rel=1e-2)
