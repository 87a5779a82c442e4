"""Split lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssl_speech.data.corpus import (
    CorpusError,
    read_split,
)

REPO = Path(__file__).resolve().parents[3]


def test_read_split(tmp_path):
    (tmp_path / "s.txt").write_text("# dev ids\na\n\n  b  \nc extra-column\n")
    assert read_split(tmp_path / "s.txt") == ["a", "b", "c"]
    (tmp_path / "d.txt").write_text("a\nb\na\n")
    with pytest.raises(CorpusError, match="line 3: id 'a' already on line 1"):
        read_split(tmp_path / "d.txt")
    with pytest.raises(FileNotFoundError):
        read_split(tmp_path / "none.txt")
