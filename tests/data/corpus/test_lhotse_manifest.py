"""lhotse recordings and supervisions read as a corpus: the same corpus as the scanned tree."""

from __future__ import annotations

import pytest

from ssl_speech.data.corpus import CorpusError, load_corpus, read_lhotse, scan_directory

lhotse = pytest.importorskip("lhotse")


def _write_lhotse(corpus, directory, speaker_of=None):
    recordings = lhotse.RecordingSet.from_recordings(
        lhotse.Recording.from_file(u.path) for u in corpus)
    supervisions = lhotse.SupervisionSet.from_segments(
        lhotse.SupervisionSegment(id=f"{u.id}-0", recording_id=u.id, start=0.0,
                                  duration=u.seconds,
                                  speaker=(speaker_of or {}).get(u.id, u.speaker))
        for u in corpus)
    path = directory / "tiny_recordings_train.jsonl.gz"
    recordings.to_file(path)
    supervisions.to_file(directory / "tiny_supervisions_train.jsonl.gz")
    return path


def _view(corpus):
    return [(u.id, u.path.resolve(), u.num_samples, u.speaker) for u in corpus]


def test_a_lhotse_manifest_gives_the_scanned_corpus(tiny_tree, tmp_path):
    root, _ = tiny_tree
    scanned = scan_directory(root)
    path = _write_lhotse(scanned, tmp_path)
    from_lhotse = read_lhotse(path)
    assert _view(from_lhotse) == _view(scanned)
    assert from_lhotse.speakers == scanned.speakers
    assert from_lhotse.root.resolve() == root.resolve()
    # through load_corpus (data.manifest=...recordings...jsonl.gz), with a split file
    dev = load_corpus(manifest=path, split=root / "splits" / "dev.txt")
    assert _view(dev) == _view(load_corpus(root=root, split="dev"))


def test_recordings_without_one_speaker_follow_on_error(tiny_tree, tmp_path):
    root, _ = tiny_tree
    scanned = scan_directory(root)
    path = _write_lhotse(scanned, tmp_path, speaker_of={scanned[0].id: None})
    with pytest.warns(UserWarning, match="no supervision with a speaker"):
        corpus = read_lhotse(path)
    assert len(corpus) == len(scanned) - 1
    with pytest.raises(CorpusError, match=f"recording '{scanned[0].id}'"):
        read_lhotse(path, on_error="raise")
    with pytest.raises(FileNotFoundError, match="supervisions"):
        read_lhotse(path, supervisions=tmp_path / "supervisions_missing.jsonl.gz")
