"""Alignments, phone lists, ABX items, label slicing and coverage checks."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ssl_speech.data.audio import audio_info
from ssl_speech.data.corpus import Corpus, Utterance, scan_directory
from ssl_speech.data.labels import (
    IGNORE_INDEX,
    AbxItem,
    LabelError,
    check_alignment_coverage,
    read_abx_items,
    read_alignments,
    read_phone_list,
    slice_labels,
)


def test_read_alignments(tmp_path):
    path = tmp_path / "align.txt"
    path.write_text("u1 0 0 3 3 3 1\n\nu2 5 5\n")
    out = read_alignments(path)
    assert list(out) == ["u1", "u2"]
    assert out["u1"].dtype == np.int64
    np.testing.assert_array_equal(out["u1"], [0, 0, 3, 3, 3, 1])


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("u1 0 1\nu1 2 3\n", "line 2: utterance 'u1' is aligned twice"),
        ("u1 0 x 1\n", "line 1: labels of 'u1' are not all integers"),
        ("u1 0 1\nu2\n", "line 2: utterance 'u2' has no labels"),
    ],
)
def test_bad_alignment_lines(tmp_path, text, fragment):
    (tmp_path / "a.txt").write_text(text)
    with pytest.raises(LabelError, match=fragment):
        read_alignments(tmp_path / "a.txt")
    with pytest.raises(FileNotFoundError):
        read_alignments(tmp_path / "none.txt")


def test_read_phone_list_in_all_forms(tmp_path):
    (tmp_path / "a.txt").write_text("sil\naa\n\nb\n")
    assert read_phone_list(tmp_path / "a.txt") == ["sil", "aa", "b"]
    (tmp_path / "b.txt").write_text("aa 1\nsil 0\nb 2\n")
    assert read_phone_list(tmp_path / "b.txt") == ["sil", "aa", "b"]
    (tmp_path / "c.txt").write_text("1 aa\n0 sil\n")
    assert read_phone_list(tmp_path / "c.txt") == ["sil", "aa"]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("sil\naa\nsil\n", r"\['sil'\] are listed twice"),
        ("sil 0\naa 2\n", "indices must be 0..1"),
        ("sil 0\naa\n", "indices must be 0..1"),
        ("sil 0 extra\n", "line 1: expected 'phone' or 'phone index'"),
    ],
)
def test_bad_phone_lists(tmp_path, text, fragment):
    (tmp_path / "p.txt").write_text(text)
    with pytest.raises(LabelError, match=fragment):
        read_phone_list(tmp_path / "p.txt")


def test_read_abx_items(tmp_path):
    path = tmp_path / "dev.item"
    path.write_text("#file onset offset #phone prev-phone next-phone speaker\n"
                    "84-121123-0000 0.3925 0.4725 ae b n 84\n"
                    "\n"
                    "84-121123-0001 1.0 1.2 n ae d 84\n")
    items = read_abx_items(path)
    assert items == [AbxItem("84-121123-0000", 0.3925, 0.4725, "ae", "b", "n", "84"),
                     AbxItem("84-121123-0001", 1.0, 1.2, "n", "ae", "d", "84")]


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("f 0.1 0.2 a b c", "line 2: expected 7 fields"),
        ("f 0.1 x a b c s", "line 2: onset/offset '0.1', 'x' are not numbers"),
        ("f 0.3 0.2 a b c s", "line 2: need 0 <= onset < offset"),
    ],
)
def test_bad_abx_lines(tmp_path, line, fragment):
    (tmp_path / "x.item").write_text(f"#file onset offset #phone prev next speaker\n{line}\n")
    with pytest.raises(LabelError, match=fragment):
        read_abx_items(tmp_path / "x.item")


def test_slice_labels():
    labels = np.arange(10, 20)  # 10 frames of 160 samples
    np.testing.assert_array_equal(slice_labels(labels, 320, 800), [12, 13, 14, 15, 16])
    np.testing.assert_array_equal(slice_labels(labels, 1280, 640), [18, 19, IGNORE_INDEX,
                                                                      IGNORE_INDEX])
    np.testing.assert_array_equal(slice_labels(labels, 3200, 320), [IGNORE_INDEX] * 2)
    assert slice_labels(labels, 0, 500).shape == (3,)  # a partial last frame is dropped
    assert slice_labels(labels, 0, 480).dtype == np.int64
    np.testing.assert_array_equal(slice_labels(labels, 40, 80, hop=40), [11, 12])
    with pytest.raises(ValueError, match="start 100 is not a non-negative multiple of hop 160"):
        slice_labels(labels, 100, 320)
    with pytest.raises(ValueError, match="hop"):
        slice_labels(labels, 0, 320, hop=0)


def test_check_alignment_coverage(tiny_tree):
    root, lengths = tiny_tree
    corpus = scan_directory(root)
    aligned = read_alignments(root / "alignments.txt")  # n // 160 frames each
    assert check_alignment_coverage(aligned, corpus) == []
    aligned["19-198-0001"] = aligned["19-198-0001"][:-1]  # within tolerance
    aligned["26-495-0000"] = aligned["26-495-0000"][:-2]  # off by 2
    aligned["19-227-0000"] = np.concatenate([aligned["19-227-0000"], [0, 0, 0]])
    del aligned["26-496-0000"]  # unaligned utterances are not checked
    assert check_alignment_coverage(aligned, corpus) == ["19-227-0000", "26-495-0000"]
    assert check_alignment_coverage(aligned, corpus, tolerance_frames=3) == []
    assert check_alignment_coverage(aligned, corpus, tolerance_frames=0) == \
        ["19-198-0001", "19-227-0000", "26-495-0000"]


def test_real_arctic_labels_as_frame_alignment(real_dir, tmp_path):
    """ARCTIC phone segments turned into 10 ms frame labels cover the audio to within 2 frames."""
    segments = []
    for line in (real_dir / "arctic_a0009_phone.lab").read_text().splitlines():
        start, end, label = line.split()
        segments.append((int(start) // 100_000, int(end) // 100_000,  # 100 ns -> 10 ms frames
                         re.match(r"^[^-]*-([^+]+)\+", label).group(1)))
    phones = sorted({p for *_, p in segments})
    frames = [phones.index(p) for a, b, p in segments for _ in range(a, b)]
    (tmp_path / "align.txt").write_text("arctic_a0009 " + " ".join(map(str, frames)) + "\n")
    aligned = read_alignments(tmp_path / "align.txt")
    info = audio_info(real_dir / "arctic_a0009.wav")
    corpus = Corpus([Utterance("arctic_a0009", info.path, info.num_samples, "slt")], real_dir)
    assert len(aligned["arctic_a0009"]) == 307 and info.num_samples // 160 == 309
    assert check_alignment_coverage(aligned, corpus) == ["arctic_a0009"]
    assert check_alignment_coverage(aligned, corpus, tolerance_frames=2) == []
    window = slice_labels(aligned["arctic_a0009"], 160 * 300, 160 * 9)
    assert phones[window[0]] == "sil" and (window[7:] == IGNORE_INDEX).all()
