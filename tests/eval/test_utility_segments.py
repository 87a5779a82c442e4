"""Segments of a task, their resampled log-mel inputs and their pseudo-label means."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_speech.eval.utility_segments import (
    Segments,
    downsample_segments,
    phone_segments,
    segment_means,
    speaker_segments,
)


def test_phone_segments_are_runs_in_canonical_order():
    alignments = {"b": np.array([3, 3, 0, 0, 0, 5]), "a": np.array([-100, 2, 2, 7])}
    segments = phone_segments(alignments)
    assert segments.utts == ["a", "b"]
    assert segments.label.tolist() == [2, 7, 3, 0, 5]
    assert segments.start.tolist() == [1, 3, 0, 2, 5]
    assert segments.end.tolist() == [3, 4, 2, 5, 6]
    assert phone_segments(alignments, ignore=(-100, 0)).label.tolist() == [2, 7, 3, 5]
    cut = phone_segments(alignments, num_frames={"a": 4, "b": 3})
    assert cut.end.max() <= 4 and cut.label.tolist() == [2, 7, 3, 0]


def test_speaker_segments_are_chunks_or_utterances():
    frames = {"u1": 450, "u2": 120}
    chunks = speaker_segments(frames, {"u1": 0, "u2": 1}, chunk_frames=200)
    assert chunks.start.tolist() == [0, 200] and chunks.label.tolist() == [0, 0]
    whole = speaker_segments(frames, {"u1": 0, "u2": 1}, chunk_frames=None)
    assert whole.end.tolist() == [450, 120] and whole.label.tolist() == [0, 1]
    with pytest.raises(KeyError, match="speaker"):
        speaker_segments(frames, {"u1": 0})


def test_segment_keys_depend_only_on_the_segment():
    segments = phone_segments({"a": np.array([1, 1, 2, 3, 3, 3]), "b": np.array([4, 4])})
    keys = segments.keys(seed=0)
    keep = np.array([True, False, True, True])
    assert segments.select(keep).keys(seed=0).tolist() == keys[keep].tolist()
    assert segments.keys(seed=1).tolist() != keys.tolist()


def test_gaussian_downsampling():
    ramp = np.arange(100, dtype=np.float32)[:, None] * np.ones((1, 3), dtype=np.float32)
    segments = Segments(["u"], np.array([0, 0, 0]), np.array([0, 10, 50]),
                        np.array([100, 11, 80]), np.array([0, 1, 2]))
    out = downsample_segments({"u": ramp}, segments, num_points=5, standardize=False)
    assert out.shape == (3, 5, 3)
    assert (out[0, 1:, 0] > out[0, :-1, 0]).all()  # a ramp stays increasing
    assert out[0, 2, 0].item() == pytest.approx(49.5, abs=0.5)  # middle point, middle frame
    assert torch.allclose(out[1], torch.full((5, 3), 10.0))  # one frame: its value everywhere
    assert out[2, :, 0].min() >= 50 and out[2, :, 0].max() <= 79
    # standardising first is the same affine map on every point (the weights sum to one)
    used = np.concatenate([ramp[0:100], ramp[10:11], ramp[50:80]])
    mean, std = used.mean(axis=0), used.std(axis=0)
    standardized = downsample_segments({"u": ramp}, segments, num_points=5)
    assert torch.allclose(standardized, (out - torch.from_numpy(mean)) / torch.from_numpy(std),
                          atol=1e-5)


def test_segment_means_skip_nan_frames():
    values = {"u": np.array([1.0, np.nan, 3.0, np.nan, np.nan, 5.0])}
    segments = Segments(["u"], np.array([0, 0, 0]), np.array([0, 3, 5]), np.array([3, 5, 6]),
                        np.array([0, 0, 0]))
    means = segment_means(values, segments)
    assert means.shape == (3, 1)
    assert means[0, 0].item() == 2.0 and np.isnan(means[1, 0].item()) and means[2, 0] == 5.0
    with pytest.raises(ValueError, match="runs past"):
        segment_means(values, Segments(["u"], np.array([0]), np.array([4]), np.array([9]),
                                       np.array([0])))
