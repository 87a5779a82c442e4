"""Finding a tree's audio files and their speakers, from directory listings alone (no file opened).

Two layouts: LibriSpeech's ``root/<speaker>/<chapter>/<utt>.<ext>`` (only files at exactly that
depth, so metadata beside the audio is ignored), or any tree with ``speaker_pattern``, a regular
expression searched in each path relative to the root. Files come out sorted, so a listing is
the same on every run and every rank.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ssl_speech.data.audio import check_extension
from ssl_speech.data.corpus.utterances import CorpusError, check_ids


@dataclass(frozen=True)
class ListedFile:
    """An audio file found in a tree.

    Attributes:
        path: absolute (or root-joined) path.
        rel: path relative to the root, ``/``-separated.
        utt_id: the utterance id it would get.
        speaker: its speaker; ``None`` when ``speaker_pattern`` did not match (see ``error``).
        error: why the file cannot be used, known from its name alone.
    """

    path: Path
    rel: str
    utt_id: str
    speaker: str | None
    error: CorpusError | None = None


def normalise_extensions(extensions: Iterable[str]) -> tuple[str, ...]:
    """``("flac", ".WAV")`` → ``(".flac", ".wav")``; unknown audio extensions raise."""
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    for ext in exts:
        check_extension("x" + ext)
    return exts


def utterance_id(rel: str, ids: str) -> str:
    """The id of the file at relative path ``rel``: its stem, or its path without extension."""
    # string operations: pathlib costs more than the rest of a cached scan
    return os.path.splitext(rel.rsplit("/", 1)[-1] if ids == "stem" else rel)[0]


def list_audio_files(
    root: Path,
    extensions: Iterable[str] = (".flac", ".wav"),
    speaker_pattern: str | None = None,
    ids: str = "stem",
) -> list[ListedFile]:
    """The audio files under ``root`` in the layout given (see module doc), sorted.

    Raises:
        ValueError: ``speaker_pattern`` has no group, or ``ids`` is unknown.
    """
    check_ids(ids)
    exts = normalise_extensions(extensions)
    if speaker_pattern is None:
        return [ListedFile(path, rel, utterance_id(rel, ids), speaker)
                for path, rel, speaker in _librispeech_files(root, exts)]
    regex = re.compile(speaker_pattern)
    if regex.groups == 0:
        raise ValueError(f"speaker_pattern={speaker_pattern!r} has no group; put the speaker "
                         r"part in parentheses, e.g. r'^(\w+)/'")
    listed = []
    for path in _pattern_files(root, exts):
        rel = path.relative_to(root).as_posix()
        match = regex.search(rel)
        if match is None:
            listed.append(ListedFile(path, rel, utterance_id(rel, ids), None, CorpusError(
                f"{path}: speaker_pattern {speaker_pattern!r} does not match {rel!r}; fix "
                "the pattern or move the file")))
            continue
        speaker = match.group("speaker") if "speaker" in regex.groupindex else match.group(1)
        listed.append(ListedFile(path, rel, utterance_id(rel, ids), speaker))
    return listed


def _librispeech_files(root: Path, extensions: tuple[str, ...]) -> Iterator[tuple[Path, str, str]]:
    """``(path, relative path, speaker)`` of audio files at depth ``speaker/chapter/file``."""
    for speaker_dir in _sorted_dirs(root):
        for chapter_dir in _sorted_dirs(Path(speaker_dir.path)):
            names = sorted(e.name for e in os.scandir(chapter_dir.path)
                           if e.is_file() and not e.name.startswith("."))
            for name in names:
                if os.path.splitext(name)[1].lower() in extensions:
                    rel = f"{speaker_dir.name}/{chapter_dir.name}/{name}"
                    yield Path(os.path.join(chapter_dir.path, name)), rel, speaker_dir.name


def _sorted_dirs(path: Path) -> list[os.DirEntry]:
    entries = [e for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".")]
    return sorted(entries, key=lambda e: e.name)


def _pattern_files(root: Path, extensions: tuple[str, ...]) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if os.path.splitext(name)[1].lower() in extensions:
                yield Path(dirpath) / name
