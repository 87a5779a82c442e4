"""Scanning a directory: layouts, lengths, bad files, on_error, speed."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ssl_speech.data.audio import AudioError
from ssl_speech.data.corpus import (
    CorpusError,
    CorpusWarning,
    load_corpus,
    scan_directory,
)

REPO = Path(__file__).resolve().parents[3]


def test_scan_librispeech_layout(tiny_tree):
    root, lengths = tiny_tree
    corpus = scan_directory(root)
    assert len(corpus) == len(lengths) == 12
    assert {u.id: u.num_samples for u in corpus} == lengths  # metadata and stray audio ignored
    assert corpus.speakers == ["103", "19", "26"]
    assert [u.path for u in corpus] == sorted(u.path for u in corpus)
    utt = corpus.by_id("26-495-0001")
    assert utt.speaker == "26" and utt.path == root / "26" / "495" / "26-495-0001.flac"
    assert corpus.speaker_index("26") == 2
    assert corpus.total_seconds == pytest.approx(sum(lengths.values()) / 16000)
    assert corpus[0] is corpus.utterances[0] and corpus.report.num_dropped == 0


def test_scan_reads_wav_and_resampled_lengths(tree_builder, audio_file):
    root, lengths = tree_builder({"a": {"1": [16000, 20000]}}, ext=".wav", with_metadata=False)
    audio_file(root / "a" / "1" / "a-1-44k.flac", 44100, sr=44100, channels=2)
    corpus = scan_directory(root)
    assert {u.id: u.num_samples for u in corpus} == {**lengths, "a-1-44k": 16000}
    assert len(scan_directory(root, extensions=["wav"])) == 2


def test_min_samples_drops_and_reports_once(tiny_tree):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        corpus = scan_directory(tiny_tree[0], min_samples=20480)
    assert all(u.num_samples >= 20480 for u in corpus) and len(corpus) == 7
    messages = [str(w.message) for w in caught if w.category is CorpusWarning]
    assert len(messages) == 1
    assert "5 shorter than min_samples=20480" in messages[0]
    assert "19-227-0000.flac (8000 samples)" in messages[0]
    assert len(corpus.report.too_short) == 5


def test_short_files_raise_with_on_error_raise(tiny_tree):
    with pytest.raises(CorpusError, match=r"103-1240-0002\.flac: 9000 samples, shorter than "
                                            "min_samples=20480"):
        scan_directory(tiny_tree[0], min_samples=20480, on_error="raise")


def _add_bad_files(root: Path, audio_file) -> dict[str, str]:
    """One bad file of each kind; returns {stem: expected message fragment}."""
    chapter = root / "19" / "198"
    (chapter / "bad-empty.flac").write_bytes(b"")
    (chapter / "bad-garbage.flac").write_bytes(os.urandom(3000))
    sf.write(chapter / "bad-nosamples.wav", np.zeros(0), 16000)
    path = audio_file(chapter / "bad-truncated.flac", 48000, seed=5)
    path.write_bytes(path.read_bytes()[:6000])
    return {"bad-empty": "empty file", "bad-garbage": "not readable",
            "bad-nosamples": "contains no samples", "bad-truncated": "truncated"}


def test_bad_files_are_skipped_counted_and_reported_once(tiny_tree, audio_file):
    root, lengths = tiny_tree
    bad = _add_bad_files(root, audio_file)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        corpus = scan_directory(root, extensions=(".flac", ".wav"))
    assert {u.id for u in corpus} == set(lengths)
    summaries = [str(w.message) for w in caught if w.category is CorpusWarning]
    assert len(summaries) == 1
    assert "4 unusable" in summaries[0] and "on_error='raise'" in summaries[0]
    skipped = {p.stem: reason for p, reason in corpus.report.skipped}
    assert skipped.keys() == bad.keys()
    for stem, fragment in bad.items():
        assert fragment in skipped[stem] and stem in skipped[stem]


@pytest.mark.parametrize("stem", ["bad-empty", "bad-garbage", "bad-nosamples", "bad-truncated"])
def test_bad_files_raise_with_on_error_raise(tmp_path, audio_file, stem):
    root = tmp_path / "c"
    audio_file(root / "19" / "198" / "good.flac", 16000)
    fragment = _add_bad_files(root, audio_file)[stem]
    for other in (root / "19" / "198").glob("bad-*"):
        if other.stem != stem:
            other.unlink()
    with pytest.raises(AudioError, match=fragment) as info:
        scan_directory(root, on_error="raise")
    assert stem in str(info.value)


def test_truncation_needs_the_end_check(tmp_path, audio_file):
    root = tmp_path / "c"
    path = audio_file(root / "s" / "c" / "cut.flac", 48000)
    path.write_bytes(path.read_bytes()[:8000])
    assert len(scan_directory(root, verify=False)) == 1  # header only: looks fine
    with pytest.warns(CorpusWarning, match="cut.flac: truncated"):
        assert len(scan_directory(root)) == 0


def test_missing_or_empty_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        scan_directory(tmp_path / "nowhere")
    (tmp_path / "a" / "b").mkdir(parents=True)
    with pytest.raises(CorpusError, match="no audio files"):
        scan_directory(tmp_path)
    with pytest.raises(ValueError, match="on_error"):
        scan_directory(tmp_path, on_error="ignore")
    with pytest.raises(ValueError, match="load_corpus needs"):
        load_corpus()


def test_speaker_pattern_for_other_trees(tmp_path, audio_file):
    root = tmp_path / "vctk"
    for name in ["p225/p225_001.wav", "p225/p225_002.wav", "p226/p226_001.wav",
                 "p226/extra/p226_003.wav", "readme/notes.wav"]:
        audio_file(root / name, 3000)
    with pytest.warns(CorpusWarning, match="does not match 'readme/notes.wav'"):
        corpus = scan_directory(root, speaker_pattern=r"^(p\d+)/")
    assert corpus.speakers == ["p225", "p226"] and len(corpus) == 4
    assert corpus.by_id("p226_003").speaker == "p226"
    with pytest.warns(CorpusWarning, match="notes.wav"):
        named = scan_directory(root, speaker_pattern=r"(?P<chapter>\w+)?_(?P<speaker>\d+)")
    assert "001" in named.speakers
    with pytest.raises(CorpusError, match="does not match"):
        scan_directory(root, speaker_pattern=r"^(p\d+)/", on_error="raise")
    with pytest.raises(ValueError, match="no group"):
        scan_directory(root, speaker_pattern=r"^p\d+/")


def test_duplicate_stems_need_path_ids(tmp_path, audio_file):
    root = tmp_path / "timit"
    for name in ["dr1/fcjf0/sa1.wav", "dr1/mdab0/sa1.wav"]:
        audio_file(root / name, 3000)
    with pytest.raises(CorpusError, match="'sa1'.*ids='path'"):
        scan_directory(root)
    corpus = scan_directory(root, ids="path")
    assert [u.id for u in corpus] == ["dr1/fcjf0/sa1", "dr1/mdab0/sa1"]
    assert corpus.speakers == ["dr1"]  # LibriSpeech layout: the first directory is the speaker


def test_scan_of_a_thousand_files_is_fast(tmp_path):
    root = tmp_path / "big"
    wav = (0.1 * np.random.default_rng(0).standard_normal(1600)).astype(np.float32)
    sf.write(tmp_path / "one.flac", wav, 16000)
    data = (tmp_path / "one.flac").read_bytes()
    for i in range(1000):
        chapter = root / f"s{i % 20}" / f"c{i % 40}"
        chapter.mkdir(parents=True, exist_ok=True)
        (chapter / f"u{i}.flac").write_bytes(data)
    start = time.perf_counter()
    corpus = scan_directory(root)
    elapsed = time.perf_counter() - start
    assert len(corpus) == 1000 and len(corpus.speakers) == 20
    assert elapsed < 2.0, f"scanning 1000 files took {elapsed:.2f} s"
