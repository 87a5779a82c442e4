"""The manifest cache: reused when nothing changed, refreshed when a file changes, is added or
removed; shared by DDP ranks (rank 0 writes, the others read)."""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

import pytest

from ssl_speech.data.audio import AudioError
from ssl_speech.data.corpus import collect, read_manifest, scan_directory
from ssl_speech.data.corpus.manifest_cache import cache_path

REPO = Path(__file__).resolve().parents[3]
OPTIONS = {"extensions": (".flac", ".wav"), "speaker_pattern": None, "ids": "stem",
           "verify": True}


def _view(corpus) -> list[tuple]:
    return [(u.id, str(u.path), u.num_samples, u.speaker) for u in corpus]


def _no_opening(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path, check_end=False):
        raise AssertionError(f"{path} was opened although the cache holds it")

    monkeypatch.setattr(collect, "audio_info", refuse)


def test_cache_is_reused_when_nothing_changed(tiny_tree, tmp_path, monkeypatch):
    root, lengths = tiny_tree
    first = scan_directory(root, cache=tmp_path / "cache")
    assert first.report.num_opened == len(lengths)
    entry = cache_path(root, OPTIONS, tmp_path / "cache")
    assert entry.is_file()
    _no_opening(monkeypatch)
    again = scan_directory(root, cache=tmp_path / "cache")
    assert again.report.num_opened == 0
    assert _view(again) == _view(first) and again.speakers == first.speakers
    # the entry is itself a manifest: it reads back to the same corpus
    monkeypatch.undo()
    assert _view(read_manifest(entry)) == _view(first)


def test_cache_sees_a_changed_an_added_and_a_removed_file(tiny_tree, tmp_path, audio_file):
    root, lengths = tiny_tree
    cache = tmp_path / "cache"
    scan_directory(root, cache=cache)
    changed = root / "19" / "198" / "19-198-0000.flac"
    audio_file(changed, 12345)
    stat = os.stat(changed)
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a later mtime
    audio_file(root / "26" / "495" / "26-495-0009.flac", 7000)  # added
    removed = root / "103" / "1241" / "103-1241-0000.flac"
    removed.unlink()

    refreshed = scan_directory(root, cache=cache)
    assert refreshed.report.num_opened == 2  # the changed and the added file, no other
    fresh = scan_directory(root)  # no cache: the truth
    assert _view(refreshed) == _view(fresh)
    by_id = {u.id: u.num_samples for u in refreshed}
    assert by_id["19-198-0000"] == 12345 and by_id["26-495-0009"] == 7000
    assert "103-1241-0000" not in by_id
    text = cache_path(root, OPTIONS, cache).read_text()
    assert "103-1241-0000" not in text and "26-495-0009" in text


def test_same_size_rewrite_is_seen_through_its_mtime(tiny_tree, tmp_path, audio_file):
    root, _ = tiny_tree
    cache = tmp_path / "cache"
    scan_directory(root, cache=cache)
    path = root / "26" / "496" / "26-496-0000.flac"
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert scan_directory(root, cache=cache).report.num_opened == 1


def test_a_corrupt_cache_entry_is_rebuilt(tiny_tree, tmp_path):
    root, lengths = tiny_tree
    cache = tmp_path / "cache"
    first = scan_directory(root, cache=cache)
    entry = cache_path(root, OPTIONS, cache)
    entry.write_text(entry.read_text()[:-30] + "\tgarbage\n")
    again = scan_directory(root, cache=cache)
    assert again.report.num_opened == len(lengths) and _view(again) == _view(first)
    assert scan_directory(root, cache=cache).report.num_opened == 0


def test_a_split_scan_keeps_the_entries_of_files_it_did_not_open(tiny_tree, tmp_path):
    root, lengths = tiny_tree
    cache = tmp_path / "cache"
    scan_directory(root, cache=cache)
    one = scan_directory(root, cache=cache, keep_ids={"26-496-0000"})
    assert [u.id for u in one] == ["26-496-0000"] and one.report.num_opened == 0
    assert scan_directory(root, cache=cache).report.num_opened == 0


def test_options_key_the_cache(tiny_tree, tmp_path):
    root, _ = tiny_tree
    assert cache_path(root, OPTIONS, tmp_path) != cache_path(root, {**OPTIONS, "verify": False},
                                                             tmp_path)
    assert cache_path(root, OPTIONS, tmp_path) != cache_path(root / "19", OPTIONS, tmp_path)


def test_unusable_files_are_not_cached_and_stay_reported(tiny_tree, tmp_path):
    root, lengths = tiny_tree
    bad = root / "19" / "198" / "19-198-0099.flac"
    bad.write_bytes(b"not audio")
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning, match="19-198-0099"):
        scan_directory(root, cache=cache)
    with pytest.warns(UserWarning, match="19-198-0099"):
        again = scan_directory(root, cache=cache)
    assert again.report.num_opened == 1 and len(again.report.skipped) == 1
    with pytest.raises(AudioError, match="19-198-0099"):
        scan_directory(root, cache=cache, on_error="raise")


def _ranks(root: Path, cache: Path, **kwargs) -> list:
    """Two ranks in two threads with a barrier between them, as under DDP."""
    barrier = threading.Barrier(2, timeout=30)
    results: list = [None, None]

    def run(rank: int) -> None:
        try:
            results[rank] = scan_directory(root, cache=cache, rank=rank, barrier=barrier.wait,
                                           **kwargs)
        except Exception as err:  # noqa: BLE001 (handed to the test)
            results[rank] = err

    threads = [threading.Thread(target=run, args=(r,)) for r in (1, 0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_rank_zero_builds_and_the_other_ranks_read(tiny_tree, tmp_path):
    root, lengths = tiny_tree
    zero, one = _ranks(root, tmp_path / "cache")
    assert zero.report.num_opened == len(lengths)
    assert one.report.num_opened == 0  # it waited for rank 0's entry
    assert _view(zero) == _view(one) and zero.speakers == one.speakers


def test_a_failing_rank_zero_does_not_leave_the_others_waiting(tiny_tree, tmp_path):
    root, _ = tiny_tree
    (root / "19" / "198" / "19-198-0099.flac").write_bytes(b"not audio")
    zero, one = _ranks(root, tmp_path / "cache", on_error="raise")
    assert isinstance(zero, AudioError) and isinstance(one, AudioError)
    assert "19-198-0099" in str(zero) and "19-198-0099" in str(one)


def test_make_manifest_writes_the_cache_format(tiny_tree, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("make_manifest",
                                                  REPO / "scripts" / "make_manifest.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    root, _ = tiny_tree
    script.main([str(root), str(tmp_path / "all.tsv")])
    scan_directory(root, cache=tmp_path / "cache")
    entry = cache_path(root, OPTIONS, tmp_path / "cache")
    assert (tmp_path / "all.tsv").read_text() == entry.read_text()
