"""The one probe orchestration: several feature sets, one split, streamed or not."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_speech.eval.probing import ProbeSplit, best_baseline, probe
from ssl_speech.eval.protocols import ProbeProtocol, SpeakerProtocol


class Features(dict):
    """An in-memory feature mapping with the frame step the probes read."""

    frame_step = 0.01


def make_sources(seed: int = 0):
    rng = np.random.default_rng(seed)
    labels, speakers, good, noise = {}, {}, Features(), Features()
    for i in range(16):
        utt = f"s{i % 4}-{i}"
        y = rng.integers(0, 4, 30)
        labels[utt], speakers[utt] = y, f"s{i % 4}"
        good[utt] = (np.eye(4, 6)[y] + 0.2 * rng.standard_normal((30, 6))
                     + (i % 4)).astype(np.float32)
        noise[utt] = rng.standard_normal((30, 6)).astype(np.float32)
    ids = sorted(labels)
    split = ProbeSplit(labels, ids[:12], {"test": ids[12:]},
                       speakers={u: speakers[u] for u in ids[:12]})
    return {"good": good, "noise": noise}, split


def test_probe_runs_every_source_on_one_split(tmp_path):
    sources, split = make_sources()
    protocol = ProbeProtocol(lr=2e-2, batch_size=64, epochs=40)
    speaker = SpeakerProtocol(epochs=100, lr=5e-2)
    outcomes = probe(sources, split, protocol, speaker_protocol=speaker)
    assert set(outcomes) == {"good", "noise"}
    assert outcomes["good"].phone["test"].accuracy > 0.9
    assert outcomes["noise"].phone["test"].accuracy < 0.5
    assert outcomes["good"].phone["test"].protocol == "converged"
    assert outcomes["good"].speaker.num_speakers == 3  # s0, s1, s2 in the train list
    assert outcomes["good"].speaker.accuracy == 1.0
    streamed = probe(sources, split, protocol, frame_store=tmp_path)
    for name in sources:
        assert streamed[name].phone["test"].accuracy == outcomes[name].phone["test"].accuracy
        assert (tmp_path / name / "index.json").is_file()
    with pytest.raises(ValueError, match="needs the training utterances' speakers"):
        probe(sources, ProbeSplit(split.labels, split.train_ids, split.test_sets),
              protocol, speaker_protocol=SpeakerProtocol())


def test_missing_features_are_counted_before_training():
    sources, split = make_sources()
    partial = Features({u: v for u, v in sources["good"].items() if u != split.train_ids[0]})
    with pytest.raises(ValueError, match="1 of 12 utterances of the train list have no features"):
        probe({"partial": partial}, split)


def test_best_baseline_takes_the_stronger_spectral_features():
    assert best_baseline({"model": 0.7, "log_mel": 0.5, "mfcc": 0.58}) == ("mfcc", 0.58)
    assert best_baseline({"model": 0.7, "log_mel": 0.5, "mfcc": float("nan")}) == ("log_mel", 0.5)
    assert best_baseline({"model": 0.7}) is None
