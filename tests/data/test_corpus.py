"""Corpus scanning, manifests, splits and the handling of bad input."""

from __future__ import annotations

import importlib.util
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ssl_speech.data.audio import AudioError
from ssl_speech.data.corpus import (
    Corpus,
    CorpusError,
    CorpusWarning,
    Utterance,
    load_corpus,
    read_manifest,
    read_split,
    scan_directory,
    write_manifest,
)

REPO = Path(__file__).resolve().parents[2]


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


def test_corpus_rejects_speakers_outside_the_list(tmp_path):
    utt = Utterance("u", tmp_path / "u.flac", 100, "s1")
    with pytest.raises(CorpusError, match="s1"):
        Corpus([utt], tmp_path, speakers=["s0"])


# ----------------------------------------------------------------------------- manifests
def test_manifest_round_trip(tiny_tree, tmp_path):
    corpus = scan_directory(tiny_tree[0])
    write_manifest(corpus, tmp_path / "m" / "train.tsv")
    lines = (tmp_path / "m" / "train.tsv").read_text().splitlines()
    assert lines[0] == str(tiny_tree[0].resolve())
    assert lines[1].split("\t") == ["103/1240/103-1240-0000.flac", "30000", "103"]
    again = read_manifest(tmp_path / "m" / "train.tsv")
    assert [(u.id, u.num_samples, u.speaker) for u in again] == \
        [(u.id, u.num_samples, u.speaker) for u in corpus]
    assert [u.path.resolve() for u in again] == [u.path.resolve() for u in corpus]


def test_two_column_fairseq_manifest_takes_speaker_from_path(tiny_tree, tmp_path):
    root, lengths = tiny_tree
    manifest = tmp_path / "fairseq.tsv"
    manifest.write_text(f"{root}\n26/495/26-495-0000.flac\t20480\n19/227/19-227-0001.flac\t"
                        "32000\n")
    corpus = read_manifest(manifest)
    assert [(u.id, u.speaker) for u in corpus] == [("26-495-0000", "26"), ("19-227-0001", "19")]


def test_manifest_relative_root(tiny_tree):
    root = tiny_tree[0]
    (root / "m.tsv").write_text(".\n26/496/26-496-0000.flac\t36000\tspk\n")
    assert read_manifest(root / "m.tsv")[0].path.resolve() == \
        (root / "26/496/26-496-0000.flac").resolve()


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("26/495/26-495-0000.flac", "line 3: expected 'relative_path<TAB>num_samples"),
        ("26/495/26-495-0000.flac\t\t26", "line 3: expected"),
        ("26/495/26-495-0000.flac\tmany\t26", "line 3: num_samples 'many' is not an integer"),
        ("26/495/26-495-0000.mp4\t20480\t26", "unknown audio extension '.mp4'"),
        ("26/495/gone.flac\t20480\t26", "gone.flac: no such file"),
        ("26/495/26-495-0000.flac\t20000\t26", "says 20000 samples but the header gives 20480"),
    ],
    ids=["missing-column", "empty-column", "not-integer", "extension", "missing-file", "length"],
)
def test_bad_manifest_lines(tiny_tree, tmp_path, line, fragment):
    root = tiny_tree[0]
    manifest = tmp_path / "bad.tsv"
    manifest.write_text(f"{root}\n26/496/26-496-0000.flac\t36000\t26\n{line}\n")
    with pytest.raises((CorpusError, AudioError), match=fragment):
        read_manifest(manifest, on_error="raise")
    with pytest.warns(CorpusWarning, match="1 unusable"):
        corpus = read_manifest(manifest, on_error="skip")
    assert [u.id for u in corpus] == ["26-496-0000"]


def test_manifest_without_verification_trusts_lengths(tiny_tree, tmp_path):
    manifest = tmp_path / "m.tsv"
    manifest.write_text(f"{tiny_tree[0]}\n26/495/gone.flac\t20000\t26\n")
    corpus = read_manifest(manifest, verify=False)
    assert corpus[0].num_samples == 20000
    manifest.write_text(f"{tiny_tree[0]}\n26/495/gone.ogv\t20000\t26\n")
    with pytest.raises(AudioError, match="unknown audio extension"):
        read_manifest(manifest, verify=False, on_error="raise")


def test_missing_manifest_or_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="make_manifest"):
        read_manifest(tmp_path / "none.tsv")
    (tmp_path / "m.tsv").write_text(f"{tmp_path / 'gone'}\na/b/c.flac\t10\tx\n")
    with pytest.raises(FileNotFoundError, match="line 1: root"):
        read_manifest(tmp_path / "m.tsv")
    (tmp_path / "e.tsv").write_text("")
    with pytest.raises(CorpusError, match="first line"):
        read_manifest(tmp_path / "e.tsv")


# ----------------------------------------------------------------------------- splits
def test_read_split(tmp_path):
    (tmp_path / "s.txt").write_text("# dev ids\na\n\n  b  \nc extra-column\n")
    assert read_split(tmp_path / "s.txt") == ["a", "b", "c"]
    (tmp_path / "d.txt").write_text("a\nb\na\n")
    with pytest.raises(CorpusError, match="line 3: id 'a' already on line 1"):
        read_split(tmp_path / "d.txt")
    with pytest.raises(FileNotFoundError):
        read_split(tmp_path / "none.txt")


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


# ----------------------------------------------------------------------------- speed, script
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


def test_make_manifest_script(tiny_tree, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("make_manifest",
                                                  REPO / "scripts" / "make_manifest.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    root, lengths = tiny_tree
    out = tmp_path / "out" / "all.tsv"
    with pytest.warns(CorpusWarning, match="shorter than min_samples=10000"):
        script.main([str(root), str(out), "--ext", "flac", "--min-samples", "10000"])
    kept = {u for u, n in lengths.items() if n >= 10000}
    assert f"{len(kept)} utterances, 3 speakers" in capsys.readouterr().out
    assert {u.id for u in read_manifest(out)} == kept
