"""Statistics of a generated embedded corpus, and the script that prints them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from synthetic_files import read_alignments

from ssl_speech.data.synthetic import PHONES, corpus_statistics, is_complete

REPO = Path(__file__).resolve().parents[3]


def test_statistics(corpus: Path) -> None:
    stats = corpus_statistics(corpus)
    frames = stats["phone_frames"]
    assert list(frames) == PHONES
    assert sum(frames.values()) == sum(len(v) for v in read_alignments(corpus).values())
    assert 0.05 < stats["silence_fraction"] < 0.5
    assert sum(n > 0 for n in frames.values()) > 25
    assert stats["abx_items"]["test"] > 20
    json.dumps(stats)


def test_command_line(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = ["--out", str(out), "--hours", "0.005", "--speakers", "6", "--heldout-speakers", "2",
            "--workers", "1", "--seed", "1", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "make_synthetic_corpus.py"),
                             *args], capture_output=True, text=True, env=env, check=True)
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    assert stats["num_phones"] == len(PHONES) and stats["seed"] == 1
    assert stats["num_speakers"] == {"train": 4, "heldout": 2}
    assert "phones: 40" in result.stdout and is_complete(out)
