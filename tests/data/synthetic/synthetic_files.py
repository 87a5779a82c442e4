"""Readers of a generated embedded corpus's files, shared by the tests of ``data/synthetic``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ssl_speech.data.synthetic import SyntheticCorpusSpec

TINY = SyntheticCorpusSpec(
    seed=3, hours=0.01, num_speakers=6, num_heldout_speakers=2, lexicon_size=60,
    min_utterance_seconds=1.0, max_utterance_seconds=2.0,
)


def file_hashes(root: Path) -> dict[str, str]:
    """Digest of every file except the run-dependent corpus.json."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file() and p.name != "corpus.json"
    }


def read_meta(root: Path) -> dict:
    return json.loads((root / "corpus.json").read_text())


def read_lines(path: Path) -> list[str]:
    return path.read_text().split("\n")[:-1]


def read_alignments(root: Path) -> dict[str, np.ndarray]:
    rows = [line.split() for line in read_lines(root / "alignments.txt")]
    return {row[0]: np.array(row[1:], dtype=np.int64) for row in rows}


def audio_path(root: Path, utt: str) -> Path:
    speaker, chapter, _ = utt.split("-")
    return root / speaker / chapter / f"{utt}.flac"
