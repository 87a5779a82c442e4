"""The batch: shape checks, and the skipped windows that travel with it."""

from __future__ import annotations

import pytest
import torch

from ssl_speech.data.batch import Batch


def test_batch_checks_shapes_and_keeps_its_skipped_windows_on_moving():
    skipped = (("/data/a.flac", "/data/a.flac: no such file"),)
    batch = Batch(wav=torch.zeros(2, 1, 320), speaker=torch.tensor([0, 1]), skipped=skipped)
    moved = batch.to("cpu")
    assert moved.skipped == skipped and moved.size == 2
    assert Batch(wav=torch.zeros(1, 1, 8), speaker=torch.zeros(1, dtype=torch.long)).skipped == ()
    with pytest.raises(ValueError, match="batch, 1, samples"):
        Batch(wav=torch.zeros(2, 320), speaker=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"Batch.speaker must be \(2,\)"):
        Batch(wav=torch.zeros(2, 1, 320), speaker=torch.tensor([0]))
