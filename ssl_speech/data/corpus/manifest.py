"""Manifest TSVs: a corpus written as text, as fairseq does, with speakers and file stamps added.

Format: the first line is the root directory (relative roots are taken relative to the
manifest's directory), then one line per file::

    relative_path<TAB>num_samples[<TAB>speaker[<TAB>size_bytes<TAB>mtime_ns]]

``num_samples`` counts samples at 16 kHz, which is fairseq's frame count for 16 kHz audio. In a
two-column (plain fairseq) manifest the speaker is the first component of the relative path, as
in LibriSpeech. The last two columns, the file's size and modification time when its header was
read, are what the manifest cache compares to decide whether a file changed;
``scripts/make_manifest.py`` writes them too, so a written manifest and a cache entry are one
format.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from ssl_speech.data.audio import AudioError, check_extension
from ssl_speech.data.corpus.collect import DEFAULT_THREADS, Collector, FileJob
from ssl_speech.data.corpus.discovery import utterance_id
from ssl_speech.data.corpus.utterances import Corpus, CorpusError, FileStamp, check_ids


@dataclass(frozen=True)
class ManifestRow:
    """One line of a manifest (``stamp`` is ``None`` in a manifest without stamp columns)."""

    rel: str
    num_samples: int
    speaker: str
    stamp: FileStamp | None = None


def manifest_lines(path: Path) -> tuple[Path, list[str]]:
    """The root (first line; relative to the manifest's directory if relative) and the rest."""
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist; write one with "
                                "scripts/make_manifest.py ROOT OUT.tsv")
    lines = path.read_text().splitlines()
    if not lines or not lines[0].strip():
        raise CorpusError(f"{path}: the first line must be the corpus root directory")
    root = Path(lines[0].strip()).expanduser()
    return (root if root.is_absolute() else path.parent / root), lines[1:]


def parse_manifest_line(line: str, path: Path, number: int) -> ManifestRow:
    """A manifest line (``number`` counts from 1, the root line) as a :class:`ManifestRow`."""
    cols = line.rstrip("\n").split("\t")
    where = f"{path}, line {number}"
    if len(cols) not in (2, 3, 5) or not all(c.strip() for c in cols):
        raise CorpusError(f"{where}: expected 'relative_path<TAB>num_samples[<TAB>speaker"
                          f"[<TAB>size<TAB>mtime_ns]]', got {line!r}; fix or delete the line")
    numbers = []
    for name, text in zip(("num_samples", "size", "mtime_ns"), cols[1:2] + cols[3:]):
        try:
            numbers.append(int(text))
        except ValueError:
            raise CorpusError(f"{where}: {name} {text!r} is not an integer; fix the line or "
                              "regenerate the manifest") from None
    rel = cols[0].strip()
    speaker = cols[2].strip() if len(cols) >= 3 else Path(rel).parts[0]
    stamp = FileStamp(numbers[1], numbers[2], numbers[0]) if len(cols) == 5 else None
    return ManifestRow(rel, numbers[0], speaker, stamp)


def format_manifest(root: Path, rows: Iterable[ManifestRow]) -> str:
    """The text of a manifest of ``rows`` under ``root`` (stamp columns where rows have them)."""
    out = [str(root)]
    for row in rows:
        for text in (row.rel, row.speaker):
            if "\t" in text or "\n" in text:
                raise CorpusError(f"{text!r}: a tab or newline cannot be written to a manifest")
        line = f"{row.rel}\t{row.num_samples}\t{row.speaker}"
        if row.stamp is not None:
            line += f"\t{row.stamp.size}\t{row.stamp.mtime_ns}"
        out.append(line)
    return "\n".join(out) + "\n"


def read_manifest(
    path: str | Path,
    on_error: str = "skip",
    min_samples: int = 0,
    verify: bool = True,
    ids: str = "stem",
    keep_ids: Collection[str] | None = None,
    threads: int = DEFAULT_THREADS,
) -> Corpus:
    """Read a manifest TSV (format in the module doc) into a :class:`Corpus`.

    Args:
        on_error: ``"skip"`` or ``"raise"`` for bad lines and unusable files.
        min_samples: files shorter than this (samples at 16 kHz) follow ``on_error``.
        verify: open each file's header (and decode its last sample) to check that it exists,
            is readable and has the length the manifest says; ``False`` trusts the manifest
            and checks only the extensions. A line with stamp columns is checked by a
            ``stat`` alone: the file is opened only when its size or mtime differ from the
            stamp (it was verified when the manifest was written).
        ids: ``"stem"`` or ``"path"`` (relative path without extension).
        keep_ids: take only these utterance ids (a split); every line's speaker still enters
            the speaker list.
        threads: header readers when ``verify`` (the result does not depend on it).
    """
    path = Path(path).expanduser()
    check_ids(ids)
    root, lines = manifest_lines(path)
    if verify and not root.is_dir():
        raise FileNotFoundError(f"{path}, line 1: root {root} is not a directory; fix the first "
                                "line of the manifest")
    collector = Collector(path, on_error, min_samples, verify, keep_ids, threads)
    stamps: dict[str, FileStamp] = {}
    for number, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        try:
            row = parse_manifest_line(line, path, number)
            audio = root / row.rel
            check_extension(audio)
        except (CorpusError, AudioError) as err:
            collector.add(FileJob(path, error=err))
            continue
        collector.add(FileJob(audio, utterance_id(row.rel, ids), row.speaker,
                               expected=row.num_samples, key=row.rel, trusted=not verify))
        if row.stamp is not None:
            stamps[row.rel] = row.stamp
    collector.run(stamps)
    return collector.corpus(root)


def write_manifest(corpus: Corpus, path: str | Path) -> None:
    """Write ``corpus`` as a manifest TSV (see module doc), with the stamp columns when the scan
    that built it recorded every file's stamp."""
    path = Path(path)
    root = corpus.root.resolve()
    stamps = corpus.report.stamps if corpus.report is not None else {}
    rows = []
    for u in corpus.utterances:
        rel = Path(os.path.relpath(Path(u.path).resolve(), root)).as_posix()
        rows.append(ManifestRow(rel, u.num_samples, u.speaker, stamps.get(rel)))
    if any(row.stamp is None for row in rows):
        rows = [ManifestRow(r.rel, r.num_samples, r.speaker) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_manifest(root, rows))
