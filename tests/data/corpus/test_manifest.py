"""Manifest TSVs: round trip, fairseq manifests, bad lines, the script that writes them."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from ssl_speech.data.audio import AudioError
from ssl_speech.data.corpus import (
    CorpusError,
    CorpusWarning,
    read_manifest,
    scan_directory,
    write_manifest,
)

REPO = Path(__file__).resolve().parents[3]


def test_manifest_round_trip(tiny_tree, tmp_path):
    corpus = scan_directory(tiny_tree[0])
    write_manifest(corpus, tmp_path / "m" / "train.tsv")
    lines = (tmp_path / "m" / "train.tsv").read_text().splitlines()
    assert lines[0] == str(tiny_tree[0].resolve())
    cols = lines[1].split("\t")
    assert cols[:3] == ["103/1240/103-1240-0000.flac", "30000", "103"]
    # the scan's stamps: what the manifest cache compares to see a changed file
    stat = os.stat(tiny_tree[0] / "103" / "1240" / "103-1240-0000.flac")
    assert cols[3:] == [str(stat.st_size), str(stat.st_mtime_ns)]
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


def test_a_stamped_manifest_opens_only_the_files_that_changed(tiny_tree, tmp_path, audio_file):
    root, lengths = tiny_tree
    write_manifest(scan_directory(root), tmp_path / "all.tsv")
    again = read_manifest(tmp_path / "all.tsv")
    assert again.report.num_opened == 0 and len(again) == len(lengths)
    audio_file(root / "26" / "496" / "26-496-0000.flac", 30000)  # rewritten: 36000 before
    with pytest.warns(CorpusWarning, match="the manifest says 36000 samples"):
        changed = read_manifest(tmp_path / "all.tsv")
    assert changed.report.num_opened == 1 and len(changed) == len(lengths) - 1
    (root / "19" / "227" / "19-227-0000.flac").unlink()
    with pytest.raises(AudioError, match="19-227-0000.flac: no such file"):
        read_manifest(tmp_path / "all.tsv", on_error="raise")
