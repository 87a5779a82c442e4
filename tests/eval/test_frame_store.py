"""Frame stores: written one utterance at a time, read back through a memory map."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_speech.eval.frame_store import FrameStore, row_moments, stack_frames, write_frame_store


def _triples(dtype=np.float32):
    rng = np.random.default_rng(0)
    return [(f"u{i}", rng.standard_normal((5 + i, 3)).astype(dtype), np.arange(5 + i))
            for i in range(4)]


def test_store_rows_equal_the_in_memory_rows(tmp_path):
    memory = stack_frames(_triples())
    store = write_frame_store(_triples(), tmp_path / "store")
    again = FrameStore(tmp_path / "store")
    index = np.array([20, 3, 7, 3, 0, 25])
    for table in (store, again):
        assert len(table) == len(memory) == 26 and table.dim == 3
        np.testing.assert_array_equal(table.rows(index), memory.rows(index))
        np.testing.assert_array_equal(table.labels, memory.labels)
        assert table.utterances == memory.utterances == {"u0": (0, 5), "u1": (5, 11),
                                                         "u2": (11, 18), "u3": (18, 26)}
    np.testing.assert_array_equal(row_moments(store, np.arange(26))[0],
                                  row_moments(memory, np.arange(26))[0])


def test_float16_store_and_bad_input(tmp_path):
    store = write_frame_store(_triples(), tmp_path / "half", dtype="float16")
    full = stack_frames(_triples())
    np.testing.assert_allclose(store.rows(np.arange(26)), full.rows(np.arange(26)), atol=2e-3)
    assert store.rows(np.arange(2)).dtype == np.float32
    with pytest.raises(ValueError, match="float32"):
        write_frame_store(_triples(), tmp_path / "x", dtype="int8")
    with pytest.raises(FileNotFoundError, match="not a frame store"):
        FrameStore(tmp_path / "nothing")
    bad = _triples() + [("odd", np.zeros((2, 4), np.float32), np.zeros(2, int))]
    with pytest.raises(ValueError, match="'odd'"):
        write_frame_store(bad, tmp_path / "bad")


def test_a_store_that_hands_its_pages_back_gives_the_same_rows(tmp_path):
    write_frame_store(_triples(), tmp_path / "s")
    kept, released = FrameStore(tmp_path / "s", release_bytes=None), FrameStore(tmp_path / "s",
                                                                                release_bytes=1)
    rng = np.random.default_rng(2)
    for _ in range(5):
        index = rng.integers(0, len(kept), 7)
        np.testing.assert_array_equal(released.rows(index), kept.rows(index))
    assert released._touched == 0  # released after every gather (budget of 1 byte)
    with pytest.raises(ValueError, match="release_bytes"):
        FrameStore(tmp_path / "s", release_bytes=0)
