"""The evaluation pipeline on the tiny embedded corpus: inputs, known answers, bad inputs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_speech.data.corpus import load_corpus
from ssl_speech.eval.evaluation import (
    EvalInputs,
    ProbeProtocol,
    SpeakerProtocol,
    evaluate_features,
    evaluate_source,
    source_name,
)
from ssl_speech.eval.features import FEATURES_JSON, FeatureDir
from ssl_speech.eval.probing import ProbeSplit, probe_phones
from ssl_speech.nn.context import LSTMContext
from ssl_speech.nn.encoders import CPCEncoder
from ssl_speech.nn.model import SSLModel
from ssl_speech.runs.checkpoint import save_checkpoint

# a fixed schedule: 4 training utterances leave too few to hold some out for the stopping rule
FAST = ProbeProtocol(name="fixed", epochs=20, lr=1e-2, batch_size=256, validation_fraction=None,
                     patience=None)
FAST_SPEAKER = SpeakerProtocol(epochs=100, lr=1e-2)  # the tiny corpus has 4 training utterances
NUM_PHONES = 40


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus(tiny_corpus):
    return load_corpus(root=tiny_corpus)


def heldout_inputs(root: Path, **kwargs) -> EvalInputs:
    # the tiny corpus's dev items have no triplet; its held-out speakers' items have both kinds
    return EvalInputs.resolve(root=root, abx_items=["test_heldout_speakers"], **kwargs)


def write_features(path: Path, corpus, labels, kind: str, frame_step: float = 0.01,
                   extra_frames: int = 0, seed: int = 0) -> FeatureDir:
    """Per-utterance features: ``oracle`` encodes the phone and the speaker, ``speaker`` only the
    speaker, ``noise`` nothing."""
    rng = np.random.default_rng(seed)
    speakers = sorted({u.speaker for u in corpus})
    phones = NUM_PHONES if kind != "speaker" else 0
    path.mkdir(parents=True)
    for utt in corpus:
        lab = labels[utt.id]
        frames = len(lab) + extra_frames
        x = rng.normal(scale=0.1, size=(frames, phones + len(speakers)))
        if kind == "oracle":
            x[np.arange(len(lab)), lab] += 3.0
        if kind in ("oracle", "speaker"):
            x[:, phones + speakers.index(utt.speaker)] += 1.0
        np.save(path / f"{utt.id}.npy", x.astype(np.float32))
    (path / FEATURES_JSON).write_text(json.dumps({"frame_step": frame_step, "kind": kind}))
    return FeatureDir(path)


def test_features_that_encode_the_answer_score_perfectly(tmp_path, tiny_corpus, corpus):
    inputs = heldout_inputs(tiny_corpus)
    oracle = write_features(tmp_path / "oracle", corpus, inputs.labels, "oracle")
    record = evaluate_features("oracle", oracle, inputs, protocol=FAST)
    figures = record.figures()
    assert figures["phone_acc"] > 0.95 and figures["phone_acc_heldout_speakers"] > 0.95
    assert figures["abx_within"] == 0.0 and figures["abx_across"] == 0.0
    assert 0.0 <= figures["speaker_acc"] <= 1.0
    assert set(record.seconds) == {"phone_probe", "abx", "speaker_probe"}
    assert record.phone["test"].confusion.shape == (NUM_PHONES, NUM_PHONES)
    # the one-hidden-layer variant, trained on a subset of the train list
    train, test = inputs.train_ids(), inputs.phone_test_sets()["test"]
    hidden = replace(FAST, hidden=16, max_train_utterances=2)
    result = probe_phones(oracle, 0.01, ProbeSplit(inputs.labels, train, {"test": test}),
                          hidden)["test"]
    assert result.accuracy > 0.9
    assert result.train_frames < sum(len(inputs.labels[u]) for u in train)
    # 4 training utterances: the speaker probe is exact only on features of the speaker alone
    by_speaker = write_features(tmp_path / "speaker", corpus, inputs.labels, "speaker")
    record = evaluate_features("speaker", by_speaker, inputs, stages=("speaker_probe",),
                               speaker_protocol=FAST_SPEAKER)
    assert record.figures() == {"speaker_acc": 1.0}


def test_noise_features_score_chance(tmp_path, tiny_corpus, corpus):
    inputs = heldout_inputs(tiny_corpus)
    noise = write_features(tmp_path / "noise", corpus, inputs.labels, "noise")
    record = evaluate_features("noise", noise, inputs, stages=("phone_probe",), protocol=FAST)
    for result in record.phone.values():
        # at most what always answering the most frequent training phone gets
        assert result.accuracy <= result.chance + 0.03


def test_bad_inputs_name_what_is_missing_with_a_count(tmp_path, tiny_corpus, corpus):
    inputs = heldout_inputs(tiny_corpus)
    labels = inputs.labels
    features = write_features(tmp_path / "f", corpus, labels, "oracle")
    train = inputs.train_ids()
    for utt in train[:2]:
        (features.path / f"{utt}.npy").unlink()
    with pytest.raises(ValueError, match=rf"2 of {len(train)} utterances of the train list have "
                                         "no features"):
        evaluate_features("f", FeatureDir(features.path), inputs, stages=("phone_probe",))

    partial = tmp_path / "alignments.txt"
    keep = train[1:]
    partial.write_text("".join(f"{u} {' '.join(map(str, labels[u]))}\n" for u in keep))
    fewer = heldout_inputs(tiny_corpus, alignments=partial)
    full = write_features(tmp_path / "g", corpus, labels, "oracle")
    with pytest.raises(ValueError, match=rf"1 of {len(train)} utterances of the train list have "
                                         rf"no labels in the alignment file: '{train[0]}'"):
        evaluate_features("g", full, fewer, stages=("phone_probe",))

    slow = write_features(tmp_path / "h", corpus, labels, "oracle", frame_step=0.02)
    with pytest.raises(ValueError, match=rf"does not match {len(corpus)} of {len(corpus)} "):
        evaluate_features("h", slow, inputs)

    shifted = write_features(tmp_path / "i", corpus, labels, "oracle", extra_frames=5)
    with pytest.raises(ValueError, match=r"off by \+5 frames"):
        probe_phones(shifted, 0.01, ProbeSplit(labels, train, {"test": train}))

    items = tmp_path / "ghost.item"
    lines = (tiny_corpus / "abx" / "test.item").read_text().splitlines()
    ghosts = [line.replace(line.split()[0], f"ghost{i}", 1) for i, line in enumerate(lines[1:3])]
    items.write_text("\n".join([*lines, *ghosts]) + "\n")
    with_ghosts = EvalInputs.resolve(root=tiny_corpus, abx_items=[items])
    n_files = len({line.split()[0] for line in lines[1:]}) + 2
    with pytest.raises(ValueError, match=rf"2 of {n_files} utterances of the item file have no "
                                         "features.*'ghost0', 'ghost1'"):
        evaluate_features("f", full, with_ghosts, stages=("abx",))
    with pytest.raises(ValueError, match=rf"2 of {n_files} utterances of the item file .*ghost"
                                         r".* are not in the corpus under"):
        with_ghosts.utterances_needed(("abx",))


def save_small_checkpoint(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = SSLModel(CPCEncoder(dim=8), LSTMContext(input_dim=8, dim=8))
    config = {"encoder": {"_target_": "ssl_speech.nn.encoders.CPCEncoder", "dim": 8},
              "context": {"_target_": "ssl_speech.nn.context.LSTMContext", "input_dim": 8,
                          "dim": 8},
              "objective": {"_target_": "ssl_speech.objectives.aligned_cpc.ACPC"}}
    return save_checkpoint({"model": model.state_dict(), "config": config, "step": 3}, path)


def test_evaluate_source_exports_a_checkpoint_then_measures(tmp_path, tiny_corpus):
    checkpoint = save_small_checkpoint(tmp_path / "myrun" / "checkpoints" / "ckpt-00000003.pt",
                                       seed=0)
    assert source_name(tmp_path / "myrun") == "myrun"
    assert source_name(checkpoint) == "myrun@ckpt-00000003"
    inputs = heldout_inputs(tiny_corpus)
    quick = ProbeProtocol(epochs=1, lr=1e-3)
    record = evaluate_source(tmp_path / "myrun", inputs, tmp_path / "features", protocol=quick,
                             speaker_protocol=SpeakerProtocol(epochs=2))
    assert record.name == "myrun" and record.objective == "ACPC" and record.step == 3
    assert record.run_dir == (tmp_path / "myrun").resolve()
    assert set(record.seconds) == {"export", "phone_probe", "abx", "speaker_probe"}
    assert set(record.figures()) == {"phone_acc", "phone_acc_heldout_speakers", "abx_within",
                                     "abx_across", "speaker_acc"}
    exported = tmp_path / "features" / "myrun"
    assert len(list(exported.glob("*.npy"))) == len(inputs.utterances_needed())
    # a baseline goes through the same pipeline
    baseline = evaluate_source("log_mel", inputs, tmp_path / "features", stages=("abx",))
    assert baseline.is_baseline and baseline.layer is None and "export" in baseline.seconds
