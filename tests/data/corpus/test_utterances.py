"""The corpus itself: lookups, subsets, the speaker list."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssl_speech.data.corpus import (
    Corpus,
    CorpusError,
    Utterance,
    scan_directory,
)

REPO = Path(__file__).resolve().parents[3]


def test_lookup_errors_and_subset(tiny_tree):
    corpus = scan_directory(tiny_tree[0])
    with pytest.raises(KeyError, match="speaker '7'"):
        corpus.speaker_index("7")
    with pytest.raises(KeyError, match="nope"):
        corpus.by_id("nope")
    sub = corpus.subset(["26-496-0000", "19-198-0002"])
    assert [u.id for u in sub] == ["26-496-0000", "19-198-0002"]
    assert sub.speakers == corpus.speakers and sub.speaker_index("26") == 2
    with pytest.raises(CorpusError, match=r"3 of 4 ids .* e\.g\. x, y, z"):
        corpus.subset(["x", "26-496-0000", "y", "z"])


def test_corpus_rejects_speakers_outside_the_list(tmp_path):
    utt = Utterance("u", tmp_path / "u.flac", 100, "s1")
    with pytest.raises(CorpusError, match="s1"):
        Corpus([utt], tmp_path, speakers=["s0"])
