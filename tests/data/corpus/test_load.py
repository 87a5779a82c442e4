"""load_corpus: splits over a scanned tree or a manifest."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from ssl_speech.data.audio import AudioError
from ssl_speech.data.corpus import (
    CorpusError,
    CorpusWarning,
    load_corpus,
    scan_directory,
    write_manifest,
)

REPO = Path(__file__).resolve().parents[3]


def test_load_corpus_with_named_and_file_splits(tiny_tree, tmp_path):
    root, lengths = tiny_tree
    train = load_corpus(root=root, split="train")
    assert [u.id for u in train] == sorted(lengths)[::2]
    assert train.speakers == ["103", "19", "26"]
    (tmp_path / "mine.txt").write_text("26-496-0000\n")
    assert [u.id for u in load_corpus(root=root, split=tmp_path / "mine.txt")] == ["26-496-0000"]
    with pytest.raises(FileNotFoundError, match=r"'test'.*available.*\['dev', 'train'\]"):
        load_corpus(root=root, split="test")


def test_split_ids_not_in_the_corpus(tiny_tree):
    root, _ = tiny_tree
    (root / "splits" / "other.txt").write_text("\n".join(f"x{i}" for i in range(8)) +
                                               "\n26-496-0000\n")
    with pytest.raises(CorpusError, match=r"8 of 9 ids of .*other\.txt.* e\.g\. x0, x1"):
        load_corpus(root=root, split="other")


def test_split_ids_dropped_by_the_scan_are_left_out_with_a_warning(tiny_tree):
    root, lengths = tiny_tree
    with pytest.warns(CorpusWarning) as caught:
        dev = load_corpus(root=root, split="dev", min_samples=20480)
    expected = [u for u in sorted(lengths)[1::2] if lengths[u] >= 20480]
    assert [u.id for u in dev] == expected
    assert any("dropped by the scan" in str(w.message) for w in caught)


def test_split_corpora_share_the_speaker_list_and_open_only_their_files(tiny_tree,
                                                                         audio_file):
    root, lengths = tiny_tree
    (root / "splits" / "one.txt").write_text("26-496-0000\n")
    path = audio_file(root / "7" / "1" / "7-1-0000.flac", 48000)  # corrupt, outside the split
    path.write_bytes(path.read_bytes()[:5000])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to report: the bad file is not opened
        one = load_corpus(root=root, split="one", on_error="raise")
    assert [u.id for u in one] == ["26-496-0000"]
    assert one.speakers == ["103", "19", "26", "7"] and one.speaker_index("26") == 2
    assert one.report.num_found == 1
    with pytest.raises(AudioError, match="7-1-0000.flac: truncated"):
        load_corpus(root=root, on_error="raise")
    write_manifest(scan_directory(root, verify=False), root / "all.tsv")
    from_manifest = load_corpus(manifest=root / "all.tsv", split="one", on_error="raise")
    assert [u.id for u in from_manifest] == ["26-496-0000"]
    assert from_manifest.speakers == one.speakers


def test_load_corpus_from_manifest_resolves_named_splits_at_its_root(tiny_tree, tmp_path):
    root, lengths = tiny_tree
    write_manifest(scan_directory(root), tmp_path / "all.tsv")
    dev = load_corpus(manifest=tmp_path / "all.tsv", split="dev")
    assert [u.id for u in dev] == sorted(lengths)[1::2]
