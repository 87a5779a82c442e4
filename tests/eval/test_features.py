"""Feature export and reading: layers, features.json, chunked extraction, reuse, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_speech import load_model
from ssl_speech.data.corpus import load_corpus
from ssl_speech.eval.export import export_features
from ssl_speech.eval.features import (
    FEATURES_JSON,
    ComputedFeatures,
    FeatureDir,
    baseline_features_of,
    check_frame_step,
    file_sha256,
    model_features,
    open_features,
    read_many,
)
from ssl_speech.nn.context import LSTMContext
from ssl_speech.nn.encoders import CPCEncoder
from ssl_speech.nn.model import SSLModel
from ssl_speech.runs.checkpoint import save_checkpoint

DIM = 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def save_tiny_checkpoint(path: Path, seed: int = 0, num_layers: int = 2) -> Path:
    """A randomly initialised CPC encoder + LSTM in the trainer's checkpoint format."""
    torch.manual_seed(seed)
    model = SSLModel(CPCEncoder(dim=DIM), LSTMContext(input_dim=DIM, dim=DIM,
                                                      num_layers=num_layers))
    config = {
        "encoder": {"_target_": "ssl_speech.nn.encoders.CPCEncoder", "dim": DIM},
        "context": {"_target_": "ssl_speech.nn.context.LSTMContext", "input_dim": DIM,
                    "dim": DIM, "num_layers": num_layers},
        "objective": {"_target_": "ssl_speech.objectives.cpc.CPC"},
    }
    return save_checkpoint({"model": model.state_dict(), "config": config, "step": 5}, path)


@pytest.fixture(scope="module")
def utterances(tiny_corpus):
    return list(load_corpus(root=tiny_corpus, split="test"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("run") / "checkpoints" / "ckpt-00000005.pt")


def test_export_writes_one_array_per_utterance_and_the_metadata(tmp_path, utterances,
                                                                 checkpoint):
    model = load_model(checkpoint)
    features = model_features(model, utterances, layer="context")
    out = export_features(features, tmp_path / "feats", progress=False)
    meta = json.loads((out / FEATURES_JSON).read_text())
    assert meta["frame_step"] == 0.01 and meta["layer"] == "context" and meta["dim"] == DIM
    assert meta["checkpoint_sha256"] == file_sha256(checkpoint)
    assert meta["num_utterances"] == len(utterances) and meta["complete"] is True
    assert meta["objective"] == "CPC" and meta["step"] == 5
    assert meta["run_dir"] == str(checkpoint.parent.parent.resolve())
    for utt in utterances:
        array = np.load(out / f"{utt.id}.npy")
        assert array.dtype == np.float32 and array.shape == (utt.num_samples // 160, DIM)
    reread = FeatureDir(out)
    assert reread.frame_step == 0.01 and len(reread) == len(utterances)
    first = utterances[0]
    np.testing.assert_array_equal(reread[first.id], features[first.id])


def test_named_context_layers_and_the_encoder(utterances, checkpoint):
    model = load_model(checkpoint)
    utt = utterances[:1]
    first, last = (model_features(model, utt, layer)[utt[0].id]
                   for layer in ("context.0", "context"))
    np.testing.assert_array_equal(last, model_features(model, utt, "context.1")[utt[0].id])
    np.testing.assert_array_equal(last, model_features(model, utt, "context.-1")[utt[0].id])
    assert not np.allclose(first, last)
    assert model_features(model, utt, "encoder")[utt[0].id].shape[1] == DIM
    with pytest.raises(ValueError, match="unknown layer 'context.2'.*context.0, context.1"):
        model_features(model, utt, "context.2")


def test_chunked_extraction_matches_one_pass(utterances, checkpoint):
    # short chunks bound memory for long recordings; with a frame-local encoder and the LSTM
    # state carried across chunks the result is the same as one pass
    model = load_model(checkpoint)
    utt = max(utterances, key=lambda u: u.num_samples)
    short = model_features(model, [utt], chunk_seconds=0.5)[utt.id]
    whole = model_features(model, [utt], chunk_seconds=60.0)[utt.id]
    assert utt.seconds > 2.0
    np.testing.assert_allclose(short, whole, atol=1e-4)


def test_reexport_reuses_matching_files_and_replaces_others(tmp_path, utterances, checkpoint):
    out = tmp_path / "feats"
    model = load_model(checkpoint)
    export_features(model_features(model, utterances[:2]), out, progress=False)
    first = out / f"{utterances[0].id}.npy"
    stamp = first.stat().st_mtime_ns
    # same checkpoint and layer: kept, and only the new utterance is computed
    export_features(model_features(model, utterances[:3]), out, progress=False)
    assert first.stat().st_mtime_ns == stamp
    assert json.loads((out / FEATURES_JSON).read_text())["num_utterances"] == 3
    # another source: the directory is rewritten with its utterances only
    export_features(baseline_features_of(utterances[:1]), out, progress=False)
    meta = json.loads((out / FEATURES_JSON).read_text())
    assert meta["kind"] == "log_mel" and meta["num_utterances"] == 1 and meta["dim"] == 40
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    np.save(foreign / "x.npy", np.zeros((3, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="no features.json"):
        export_features(baseline_features_of(utterances[:1]), foreign, progress=False)


def _write_dir(path: Path, arrays: dict[str, np.ndarray], frame_step: float | None) -> Path:
    path.mkdir(parents=True)
    for utt, array in arrays.items():
        np.save(path / f"{utt}.npy", array.astype(np.float32))
    if frame_step is not None:
        (path / FEATURES_JSON).write_text(json.dumps({"frame_step": frame_step}))
    return path


def test_missing_utterances_are_counted_and_named(tmp_path):
    directory = FeatureDir(_write_dir(tmp_path / "d", {"a": np.zeros((4, 3))}, 0.01))
    with pytest.raises(ValueError, match=r"2 of 3 utterances of the train list have no "
                                         r"features in feature directory .*'b', 'c'"):
        read_many(directory, ["a", "b", "c"], "train list")


def test_wrong_frame_step_is_reported_with_a_count(tmp_path, utterances):
    # 20 ms features that claim 10 ms
    arrays = {u.id: np.zeros((u.num_samples // 320, 3)) for u in utterances}
    directory = FeatureDir(_write_dir(tmp_path / "d", arrays, 0.01))
    n = len(utterances)
    with pytest.raises(ValueError, match=rf"does not match {n} of {n} utterances.*about 0.02 s"):
        check_frame_step(directory, utterances)
    assert check_frame_step(FeatureDir(directory.path, frame_step=None), utterances[:0]) == 0
    with pytest.raises(ValueError, match="disagrees with 0.01 s"):
        FeatureDir(directory.path, frame_step=0.02)
    right = FeatureDir(_write_dir(tmp_path / "e", arrays, 0.02))
    assert check_frame_step(right, utterances) == n


def test_open_features_tells_sources_apart(tmp_path, utterances, checkpoint):
    directory = _write_dir(tmp_path / "d", {"a": np.zeros((4, 3))}, None)
    opened = open_features(directory)
    assert isinstance(opened, FeatureDir) and opened.frame_step == 0.01
    for source in (checkpoint, checkpoint.parent.parent):
        computed = open_features(source, lambda: utterances[:1])
        assert isinstance(computed, ComputedFeatures) and computed.meta["kind"] == "model"
        assert computed.meta["checkpoint"] == str(checkpoint.resolve())
    mfcc = open_features("mfcc", lambda: utterances[:1])
    assert mfcc[utterances[0].id].shape[1] == 39
    with pytest.raises(FileNotFoundError, match="neither a feature directory"):
        open_features(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no checkpoints/"):
        open_features(tmp_path / "empty", lambda: utterances)


def test_float16_export_halves_the_files_and_reads_back_as_float32(tmp_path, utterances):
    source = baseline_features_of(utterances[:2])
    full = export_features(source, tmp_path / "full", progress=False)
    half = export_features(source, tmp_path / "half", progress=False, dtype="float16")
    assert json.loads((half / FEATURES_JSON).read_text())["dtype"] == "float16"
    utt = utterances[0].id
    assert np.load(half / f"{utt}.npy").dtype == np.float16
    assert (half / f"{utt}.npy").stat().st_size < 0.6 * (full / f"{utt}.npy").stat().st_size
    read = FeatureDir(half)[utt]
    assert read.dtype == np.float32
    np.testing.assert_allclose(read, FeatureDir(full)[utt], rtol=1e-3, atol=1e-3)
    # another dtype is another export: the files are replaced
    export_features(source, half, progress=False, dtype="float32")
    assert np.load(half / f"{utt}.npy").dtype == np.float32
    with pytest.raises(ValueError, match="export dtype must be one of"):
        export_features(source, tmp_path / "x", progress=False, dtype="int8")
