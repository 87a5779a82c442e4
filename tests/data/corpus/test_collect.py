"""Headers read by a pool of threads: the same corpus and report as one reader, the same first
fatal file."""

from __future__ import annotations

import warnings

import pytest

from ssl_speech.data.audio import AudioError
from ssl_speech.data.corpus import scan_directory
from ssl_speech.data.corpus.collect import Collector


def _bad_tree(root, audio_file):
    for k, n in enumerate([4000, 9000, 16000, 30000, 2000] * 8):
        audio_file(root / f"{k % 5}" / "1" / f"{k % 5}-1-{k:04d}.flac", n, seed=k)
    (root / "2" / "1" / "2-1-0007.flac").write_bytes(b"garbage")
    truncated = root / "3" / "1" / "3-1-0013.flac"
    truncated.write_bytes(truncated.read_bytes()[:3000])
    (root / "1" / "1" / "1-1-0021.flac").write_bytes(b"")


def test_threads_give_the_corpus_and_report_of_one_reader(tmp_path, audio_file):
    _bad_tree(tmp_path, audio_file)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = scan_directory(tmp_path, threads=1, min_samples=3000)
        many = scan_directory(tmp_path, threads=6, min_samples=3000)
    assert [(u.id, u.num_samples, u.speaker) for u in one] == \
        [(u.id, u.num_samples, u.speaker) for u in many]
    assert one.report.skipped == many.report.skipped and len(one.report.skipped) == 3
    assert one.report.too_short == many.report.too_short and len(one.report.too_short) == 8
    assert one.report.stamps == many.report.stamps


def test_threads_raise_at_the_first_bad_file_of_the_list(tmp_path, audio_file):
    _bad_tree(tmp_path, audio_file)
    for threads in (1, 6):
        with pytest.raises(AudioError, match="1-1-0021.flac: empty file"):
            scan_directory(tmp_path, threads=threads, on_error="raise")


def test_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="threads=0"):
        Collector(tmp_path, "skip", 0, True, None, threads=0)
    with pytest.raises(ValueError, match="threads=0"):
        scan_directory(tmp_path, threads=0)
