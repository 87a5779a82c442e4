"""The window dataset, collation and the training loader; windows that fail at read time."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ssl_speech.data.audio import AudioError, read_audio
from ssl_speech.data.batch import Batch
from ssl_speech.data.corpus import scan_directory
from ssl_speech.data.labels import IGNORE_INDEX, read_alignments
from ssl_speech.data.read_faults import ReadFault, ReadFaultWarning
from ssl_speech.data.windows import (
    WindowDataset,
    build_dataloader,
    collate_windows,
)

W = 1600  # a small window (10 frames of 160) keeps the plans small

@pytest.fixture
def labelled_tree(tree_builder):
    root, lengths = tree_builder({"a": {"1": [5 * W, 3 * W + 300]}, "b": {"2": [4 * W]}})
    return root, lengths


def test_dataset_items_match_the_files(labelled_tree):
    root, _ = labelled_tree
    corpus = scan_directory(root)
    labels = read_alignments(root / "alignments.txt")
    labels["a-1-0000"] = np.arange(len(labels["a-1-0000"]))
    for in_memory in (False, True):
        ds = WindowDataset(corpus, window=W, labels=labels, in_memory=in_memory)
        item = ds[(0, 480)]
        reference = read_audio(corpus[0].path)[480 : 480 + W]
        np.testing.assert_array_equal(item["wav"], reference)
        np.testing.assert_array_equal(item["phones"], np.arange(3, 13))
        assert item["speaker"] == 0 and item["start"] == 480 and item["utt"] == "a-1-0000"
        last = ds[(2, 3 * W)]
        assert last["speaker"] == 1 and last["wav"].shape == (W,)
        with pytest.raises(IndexError, match="outside utterance a-1-0001"):
            ds[(1, 3520)]  # 3520 + 1600 > 5100 samples
    assert WindowDataset(corpus, window=W, in_memory=True).cached_bytes == 2 * sum(
        u.num_samples for u in corpus)  # 16-bit sources are kept as int16


def test_in_memory_keeps_float_audio_when_int16_would_lose_precision(tmp_path):
    path = tmp_path / "c" / "s" / "1" / "x.flac"
    path.parent.mkdir(parents=True)
    t = np.arange(44100) / 44100
    sf.write(path, 0.4 * np.sin(2 * np.pi * 300 * t), 44100, subtype="PCM_24")
    corpus = scan_directory(tmp_path / "c")
    ds = WindowDataset(corpus, window=W, in_memory=True)
    assert ds.cached_bytes == 4 * 16000
    np.testing.assert_allclose(ds[(0, 3200)]["wav"], WindowDataset(corpus, window=W)[(0, 3200)]
                               ["wav"], atol=1e-6)


def test_missing_labels_are_ignored_frames(labelled_tree):
    root, _ = labelled_tree
    corpus = scan_directory(root)
    labels = read_alignments(root / "alignments.txt")
    del labels["b-2-0000"]
    with pytest.warns(UserWarning, match="1 of 3 utterances have no frame labels"):
        ds = WindowDataset(corpus, window=W, labels=labels)
    assert (ds[(2, 0)]["phones"] == IGNORE_INDEX).all()
    assert ds[(0, 0)]["phones"].shape == (W // 160,)


def test_collate_windows_builds_a_batch(labelled_tree):
    root, _ = labelled_tree
    corpus = scan_directory(root)
    ds = WindowDataset(corpus, window=W, labels=read_alignments(root / "alignments.txt"))
    batch = collate_windows([ds[(0, 0)], ds[(2, 1600)]])
    assert isinstance(batch, Batch)
    assert batch.wav.shape == (2, 1, W) and batch.wav.dtype == torch.float32
    assert batch.speaker.tolist() == [0, 1] and batch.speaker.dtype == torch.long
    assert batch.phones.shape == (2, W // 160) and batch.phones.dtype == torch.long
    assert batch.start.tolist() == [0, 1600] and batch.utt == ["a-1-0000", "b-2-0000"]
    plain = WindowDataset(corpus, window=W)
    assert collate_windows([plain[(0, 0)]]).phones is None
    with pytest.raises(ValueError, match="some windows"):
        collate_windows([plain[(0, 0)], ds[(0, 0)]])


def test_build_dataloader_end_to_end(labelled_tree):
    root, lengths = labelled_tree
    corpus = scan_directory(root)
    loader = build_dataloader(corpus, window=W, batch_size=2, mode="samespeaker", seed=0,
                              labels=read_alignments(root / "alignments.txt"), in_memory=True)
    batches = list(loader)
    assert len(batches) == len(loader) == len(loader.batch_sampler) == 6  # a: 8 windows, b: 4
    for batch in batches:
        assert batch.wav.shape == (2, 1, W) and batch.phones.shape == (2, 10)
        assert len(set(batch.speaker.tolist())) == 1
        assert all(corpus.speaker_index(corpus.by_id(u).speaker) == s
                   for u, s in zip(batch.utt, batch.speaker.tolist()))
        assert (batch.phones == 1).all()  # the tree's alignments label every frame 1


# ------------------------------------------------------------ files that fail at read time
def _epoch(loader) -> tuple[list[Batch], list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(loader)
    return batches, [w for w in caught if issubclass(w.category, ReadFaultWarning)]


def _windows_of(loader, path: Path) -> int:
    """Windows of ``path`` this epoch's plan holds."""
    corpus = loader.dataset.corpus
    index = next(i for i, u in enumerate(corpus) if u.path == path)
    return sum(u == index for b in loader.batch_sampler.epoch_batches(0) for u, _ in b)


def _damage(path: Path, how: str, audio_file) -> None:
    if how == "deleted":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:2000])
    elif how == "replaced by garbage":
        path.write_bytes(b"RIFF" + bytes(5000))
    else:  # replaced by a shorter recording
        audio_file(path, W + 100)


@pytest.mark.parametrize("how", ["deleted", "truncated", "replaced by garbage",
                                 "replaced by a shorter recording"])
def test_a_file_that_fails_after_the_scan_is_skipped_named_once_and_counted(
        labelled_tree, audio_file, how):
    root, _ = labelled_tree
    corpus = scan_directory(root)
    victim = corpus.by_id("a-1-0000").path
    loader = build_dataloader(corpus, window=W, batch_size=2, seed=1, drop_last=False)
    expected = _windows_of(loader, victim)
    _damage(victim, how, audio_file)
    batches, warned = _epoch(loader)
    assert len(warned) == 1 and str(victim) in str(warned[0].message)
    assert loader.faults.skipped_files == 1 and loader.faults.skipped_windows == expected == 5
    assert sum(len(b.skipped) for b in batches) == expected
    assert all(p == str(victim) for b in batches for p, _ in b.skipped)
    assert sum(b.size for b in batches) == 12 - expected  # the other windows all arrive
    assert all(u != "a-1-0000" for b in batches for u in b.utt)
    # a second epoch warns no more but keeps counting
    loader.batch_sampler.set_epoch(1)
    _, warned = _epoch(loader)
    assert warned == [] and loader.faults.skipped_windows == 2 * expected


def test_on_error_raise_stops_with_the_file_name(labelled_tree):
    root, _ = labelled_tree
    corpus = scan_directory(root)
    victim = corpus.by_id("b-2-0000").path
    loader = build_dataloader(corpus, window=W, batch_size=2, on_error="raise")
    victim.unlink()
    with pytest.raises(AudioError, match=f"{victim}: no such file"):
        list(loader)


def test_workers_warn_once_in_the_training_process(labelled_tree):
    root, _ = labelled_tree
    corpus = scan_directory(root)
    victim = corpus.by_id("a-1-0000").path
    loader = build_dataloader(corpus, window=W, batch_size=1, num_workers=2, prefetch_factor=3,
                              drop_last=False)
    expected = _windows_of(loader, victim)
    victim.unlink()
    batches, warned = _epoch(loader)
    assert len(warned) == 1 and loader.faults.skipped_windows == expected
    # every batch of one window of the victim came out empty, and was handed out all the same
    assert sum(b.size == 0 for b in batches) == expected and len(batches) == 12


def test_a_whole_batch_of_failed_windows_is_an_empty_batch(labelled_tree):
    root, _ = labelled_tree
    corpus = scan_directory(root)
    ds = WindowDataset(corpus, window=W)
    corpus.by_id("b-2-0000").path.unlink()
    batch = collate_windows([ds[(2, 0)], ds[(2, W)]])
    assert batch.size == 0 and batch.wav.shape == (0, 1, W) and len(batch.skipped) == 2


def test_in_memory_skips_the_windows_of_a_file_gone_before_loading(labelled_tree):
    root, _ = labelled_tree
    corpus = scan_directory(root)
    victim = corpus.by_id("b-2-0000").path
    victim.unlink()
    ds = WindowDataset(corpus, window=W, in_memory=True)
    assert isinstance(ds[(2, 0)], ReadFault) and str(victim) in ds[(2, 0)].reason
    assert ds[(0, 0)]["wav"].shape == (W,)
    with pytest.raises(AudioError, match="b-2-0000"):
        WindowDataset(corpus, window=W, in_memory=True, on_error="raise")


@pytest.mark.parametrize("in_memory", [False, True])
def test_non_finite_samples_are_named_at_read_time_and_their_windows_skipped(tmp_path,
                                                                           in_memory):
    wav = (0.1 * np.random.default_rng(0).standard_normal(4 * W)).astype(np.float32)
    wav[W + 7] = np.nan
    wav[3 * W + 5] = np.inf
    path = tmp_path / "c" / "s" / "1" / "s-1-0000.wav"
    path.parent.mkdir(parents=True)
    sf.write(path, wav, 16000, subtype="FLOAT")
    corpus = scan_directory(tmp_path / "c")  # the scan passes it
    assert len(corpus) == 1
    loader = build_dataloader(corpus, window=W, batch_size=1, in_memory=in_memory)
    batches, warned = _epoch(loader)
    assert len(warned) == 1 and str(path) in str(warned[0].message)
    assert "NaN or Inf" in str(warned[0].message)
    assert loader.faults.skipped_windows == 2 and loader.faults.skipped_files == 1
    assert sorted(b.start.item() for b in batches if b.size) == [0, 2 * W]
    strict = build_dataloader(corpus, window=W, batch_size=1, on_error="raise",
                              in_memory=in_memory)
    with pytest.raises(AudioError, match="NaN or Inf"):
        list(strict)


def test_loader_options_are_checked(labelled_tree):
    corpus = scan_directory(labelled_tree[0])
    with pytest.raises(ValueError, match="prefetch_factor=0"):
        build_dataloader(corpus, window=W, num_workers=1, prefetch_factor=0)
    with pytest.raises(ValueError, match="on_error='ignore'"):
        WindowDataset(corpus, window=W, on_error="ignore")
