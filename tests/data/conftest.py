"""Fixtures that write tiny corpora of generated tones and noise into ``tmp_path``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SR = 16000
REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"


def tone(num_samples: int, freq: float = 220.0, sr: int = SR, seed: int = 0,
         channels: int = 1) -> np.ndarray:
    """A sine at ``freq`` Hz plus a little noise, ``(num_samples,)`` or ``(num_samples, C)``."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / sr
    wav = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(num_samples)
    if channels > 1:
        wav = np.stack([wav * (1.0 - 0.3 * c) for c in range(channels)], axis=1)
    return wav.astype(np.float32)


def write_audio(path: Path, num_samples: int, freq: float = 220.0, sr: int = SR,
                seed: int = 0, channels: int = 1) -> Path:
    """Write a 16-bit tone file (format from the extension) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(num_samples, freq, sr, seed, channels), sr, subtype="PCM_16")
    return path


@pytest.fixture
def audio_file() -> Callable[..., Path]:
    """``audio_file(path, num_samples, freq=..., sr=..., seed=..., channels=...)``."""
    return write_audio


def build_tree(root: Path, layout: dict[str, dict[str, Sequence[int]]], ext: str = ".flac",
               with_metadata: bool = True) -> dict[str, int]:
    """Write ``root/<speaker>/<chapter>/<speaker>-<chapter>-<k>.<ext>``.

    ``layout[speaker][chapter]`` lists utterance lengths in samples. With ``with_metadata`` the
    files a synthetic corpus keeps beside its audio are added at the root. Returns
    ``{utt_id: num_samples}``.
    """
    lengths = {}
    for s_index, (speaker, chapters) in enumerate(layout.items()):
        for chapter, sizes in chapters.items():
            for k, n in enumerate(sizes):
                utt = f"{speaker}-{chapter}-{k:04d}"
                write_audio(root / speaker / chapter / f"{utt}{ext}", n,
                            freq=150.0 + 40 * s_index + 5 * k, seed=len(lengths))
                lengths[utt] = n
    if with_metadata:
        (root / "splits").mkdir(parents=True, exist_ok=True)
        ids = sorted(lengths)
        (root / "splits" / "train.txt").write_text("\n".join(ids[::2]) + "\n")
        (root / "splits" / "dev.txt").write_text("\n".join(ids[1::2]) + "\n")
        (root / "abx").mkdir(exist_ok=True)
        (root / "abx" / "dev.item").write_text("#file onset offset #phone prev next speaker\n")
        (root / "alignments.txt").write_text(
            "".join(f"{u} " + " ".join(["1"] * (n // 160)) + "\n" for u, n in lengths.items()))
        (root / "phones.txt").write_text("sil\naa\n")
        (root / "corpus.json").write_text("{}\n")
        # Stray audio at the wrong depth must be ignored by the LibriSpeech scanner.
        write_audio(root / "stray.flac", 4000)
        write_audio(root / "splits" / "stray.flac", 4000)
    return lengths


@pytest.fixture
def tiny_tree(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """3 speakers, 2 chapters each, 0.5-2.5 s utterances, with synthetic-corpus metadata."""
    layout = {
        "19": {"198": [16000, 24000, 40000], "227": [8000, 32000]},
        "26": {"495": [20480, 12000], "496": [36000]},
        "103": {"1240": [30000, 22000, 9000], "1241": [16000]},
    }
    root = tmp_path / "corpus"
    return root, build_tree(root, layout)


@pytest.fixture
def tree_builder(tmp_path: Path) -> Callable[..., tuple[Path, dict[str, int]]]:
    """``tree_builder(layout, ext='.flac', with_metadata=True, name='corpus')``."""

    def make(layout: dict[str, dict[str, Sequence[int]]], ext: str = ".flac",
             with_metadata: bool = True, name: str = "corpus") -> tuple[Path, dict[str, int]]:
        root = tmp_path / name
        return root, build_tree(root, layout, ext, with_metadata)

    return make


@pytest.fixture
def real_dir() -> Path:
    """The real-speech fixtures (see ``tests/fixtures/real/README.md``)."""
    return REAL
