"""What the scale benchmark measures on: a LibriSpeech-shaped tree of copies of the embedded
corpus's files, feature tables replicated to a given size, and files evicted from the page
cache."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

FEATURE_DIM = 256  # the size of CPC's context features


def build_tree(source: Path, out: Path, files: int) -> list[Path]:
    """A LibriSpeech-shaped tree of ``files`` copies of ``source``'s ``.flac`` files.

    Copy ``k`` of a file of speaker ``s`` belongs to speaker ``s + 10000 k`` (same chapter
    and utterance numbers), so the tree has LibriSpeech's layout and id format.
    """
    originals = sorted(source.glob("*/*/*.flac"))
    if not originals:
        raise FileNotFoundError(f"{source}: no speaker/chapter/utt.flac files to copy")
    written = []
    for i in range(files):
        src = originals[i % len(originals)]
        speaker = str(int(src.parent.parent.name) + 10000 * (i // len(originals)))
        chapter = src.parent.name
        dest = out / speaker / chapter / f"{speaker}-{chapter}-{src.stem.rsplit('-', 1)[1]}.flac"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        written.append(dest)
    return written


def _projection(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((40, FEATURE_DIM)) / math.sqrt(40)).astype(np.float32)


def corpus_features(source: Path, ids: list[str]) -> dict[str, np.ndarray]:
    """``{utt: (T, 256) float32}``: log-mel bands of ``source``'s utterances, projected."""
    from ssl_speech.data.audio import read_audio
    from ssl_speech.signal.baseline_features import log_mel_features

    paths = {p.stem: p for p in source.glob("*/*/*.flac")}
    weights = _projection()
    return {utt: np.tanh(log_mel_features(read_audio(paths[utt])) @ weights * 0.2)
            for utt in ids}


def _replicas(features: dict[str, np.ndarray], labels: dict[str, np.ndarray],
              scale: int) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    for copy in range(scale):
        for utt, feats in features.items():
            n = min(len(feats), len(labels[utt]))
            yield f"{utt}~{copy}", feats[:n], labels[utt][:n]


# ------------------------------------------------------------------ the measured jobs


def evict_from_page_cache(files: list[Path]) -> None:
    """Ask the kernel to drop these files' pages from the page cache, so that the next read
    comes from the disk, as on a first scan of a corpus (no privileges needed: written back
    first, since dirty pages stay; a virtual disk may still be cached by its host)."""

    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
