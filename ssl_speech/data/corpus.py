"""Corpora: scanning a directory or reading a manifest into a list of utterances, once, up front.

A :class:`Corpus` is the list of usable utterances (id, path, length, speaker) and the sorted
speaker list that maps speakers to class indices. It is built from

- a directory in LibriSpeech layout, ``root/<speaker>/<chapter>/<utt>.flac`` (``.wav`` too):
  only audio files at exactly that depth are taken, so metadata beside the audio (alignments,
  split lists, ABX items, ``corpus.json``) is ignored;
- any other tree with ``speaker_pattern``, a regular expression searched in each file's path
  relative to the root whose first group (or group ``speaker``) is the speaker;
- a manifest TSV as fairseq writes it (see :func:`read_manifest`).

Lengths come from file headers, never from decoding, so scanning a thousand files takes a
fraction of a second. Files that cannot be used are handled by ``on_error``: ``"raise"`` stops at
the first with an :class:`~ssl_speech.data.audio.AudioError` naming it, ``"skip"`` drops them,
counts them in a :class:`ScanReport` and warns once with a summary. Files shorter than
``min_samples`` (usually the training window) are treated the same way: an error with
``"raise"``, dropped and listed in the summary with ``"skip"``.

The speaker list of a scanned corpus holds every speaker of the tree or manifest, including
those whose files were dropped or left out by a split, so corpora of different splits of one
tree share speaker indices.

All lengths are in samples at 16 kHz (:data:`~ssl_speech.data.audio.SAMPLE_RATE`), whatever the
rate of the file.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ssl_speech.data.audio import SAMPLE_RATE, AudioError, audio_info, check_extension

ON_ERROR = ("skip", "raise")
ID_STYLES = ("stem", "path")
_SHOWN = 5  # names shown in a summary before "and N more"


class CorpusError(ValueError):
    """A corpus, manifest or split list that cannot be used as given; the message says why."""


class CorpusWarning(UserWarning):
    """Files were dropped from a corpus (the summary names the first few)."""


@dataclass(frozen=True)
class Utterance:
    """One audio file of a corpus.

    Attributes:
        id: utterance id (the file stem unless the corpus was scanned with ``ids="path"``).
        path: absolute path of the audio file.
        num_samples: length in samples at 16 kHz.
        speaker: speaker name.
    """

    id: str
    path: Path
    num_samples: int
    speaker: str

    @property
    def seconds(self) -> float:
        return self.num_samples / SAMPLE_RATE


@dataclass
class ScanReport:
    """What a scan dropped: unusable files (``skipped``) and files below ``min_samples``.

    Attributes:
        source: the directory or manifest scanned.
        num_found: audio files (or manifest lines) looked at.
        skipped: ``(path, reason)`` of each file dropped as unusable.
        too_short: ``(path, num_samples)`` of each file shorter than ``min_samples``.
        min_samples: the threshold used, in samples at 16 kHz.
    """

    source: Path
    num_found: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    too_short: list[tuple[Path, int]] = field(default_factory=list)
    min_samples: int = 0

    @property
    def num_dropped(self) -> int:
        return len(self.skipped) + len(self.too_short)

    def summary(self) -> str:
        """One paragraph: counts, then the first few files of each kind."""
        parts = [f"{self.source}: {self.num_found} files found, {self.num_dropped} dropped."]
        if self.skipped:
            shown = "; ".join(reason for _, reason in self.skipped[:_SHOWN])
            parts.append(f"{len(self.skipped)} unusable (skipped with on_error='skip'; pass "
                         f"on_error='raise' to stop at the first): {shown}{_more(self.skipped)}")
        if self.too_short:
            shown = ", ".join(f"{p} ({n} samples)" for p, n in self.too_short[:_SHOWN])
            parts.append(f"{len(self.too_short)} shorter than min_samples={self.min_samples}: "
                         f"{shown}{_more(self.too_short)}")
        return " ".join(parts)

    def warn(self) -> None:
        """Warn once with :meth:`summary` if anything was dropped."""
        if self.num_dropped:
            warnings.warn(self.summary(), CorpusWarning, stacklevel=3)

    def dropped_ids(self) -> set[str]:
        """Stems of dropped files (used to tell a dropped split id from an unknown one)."""
        return {p.stem for p, _ in self.skipped} | {p.stem for p, _ in self.too_short}


def _more(items: list) -> str:
    return f" ... and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""


class Corpus:
    """Utterances and the speaker list that indexes them.

    Args:
        utterances: the utterances; ids must be unique.
        root: the directory the corpus lives in (manifests store paths relative to it).
        speakers: the speaker list (stored sorted); defaults to the speakers of ``utterances``.
            A subset keeps its parent's list so speaker indices stay the same.
        report: what the scan that built this corpus dropped, if any.
    """

    def __init__(
        self,
        utterances: Iterable[Utterance],
        root: str | Path,
        speakers: Iterable[str] | None = None,
        report: ScanReport | None = None,
    ) -> None:
        self.utterances: list[Utterance] = list(utterances)
        self.root = Path(root)
        self.report = report
        self._by_id = {u.id: i for i, u in enumerate(self.utterances)}
        if len(self._by_id) != len(self.utterances):
            seen: dict[str, Path] = {}
            clashes = []
            for u in self.utterances:
                if u.id in seen:
                    clashes.append(f"{u.id!r} ({seen[u.id]} and {u.path})")
                seen.setdefault(u.id, u.path)
            raise CorpusError(
                f"{len(clashes)} utterance ids occur twice, e.g. {', '.join(clashes[:3])}; ids "
                "are file stems, so scan with ids='path' or rename the files"
            )
        own = {u.speaker for u in self.utterances}
        self.speakers: list[str] = sorted(own if speakers is None else speakers)
        self._speaker_index = {s: i for i, s in enumerate(self.speakers)}
        unknown = own - set(self._speaker_index)
        if unknown:
            raise CorpusError(f"speakers {sorted(unknown)[:5]} are not in the speaker list given")

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, i: int) -> Utterance:
        return self.utterances[i]

    def __iter__(self) -> Iterator[Utterance]:
        return iter(self.utterances)

    def __repr__(self) -> str:
        return (f"Corpus({len(self)} utterances, {len(self.speakers)} speakers, "
                f"{self.total_seconds / 3600:.2f} h, root={self.root})")

    @property
    def total_seconds(self) -> float:
        return sum(u.num_samples for u in self.utterances) / SAMPLE_RATE

    def speaker_index(self, speaker: str) -> int:
        """Position of ``speaker`` in :attr:`speakers` (the speaker class index)."""
        try:
            return self._speaker_index[speaker]
        except KeyError:
            raise KeyError(f"speaker {speaker!r} is not in this corpus "
                           f"({len(self.speakers)} speakers)") from None

    def index(self, utt_id: str) -> int:
        """Position of utterance ``utt_id`` in :attr:`utterances`."""
        try:
            return self._by_id[utt_id]
        except KeyError:
            raise KeyError(f"utterance {utt_id!r} is not in this corpus "
                           f"({len(self)} utterances under {self.root})") from None

    def by_id(self, utt_id: str) -> Utterance:
        return self.utterances[self.index(utt_id)]

    def __contains__(self, utt_id: object) -> bool:
        return utt_id in self._by_id

    def subset(self, ids: Iterable[str], source: str | Path = "the id list") -> Corpus:
        """The utterances ``ids``, in that order, with this corpus's speaker list.

        Raises:
            CorpusError: some ids are not in the corpus (the message gives the count and a few).
        """
        ids = list(ids)
        missing = [i for i in ids if i not in self._by_id]
        if missing:
            raise CorpusError(
                f"{len(missing)} of {len(ids)} ids of {source} are not in the corpus under "
                f"{self.root}, e.g. {', '.join(missing[:_SHOWN])}; check that the split list "
                "belongs to this corpus"
            )
        return Corpus([self.utterances[self._by_id[i]] for i in ids], self.root,
                      speakers=self.speakers, report=self.report)


# --------------------------------------------------------------------------- scanning
def _check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r}: expected one of {ON_ERROR}")


def _utterance_id(path: Path, root: Path, ids: str) -> str:
    if ids == "stem":
        return path.stem
    return path.relative_to(root).with_suffix("").as_posix()


def _librispeech_files(root: Path, extensions: tuple[str, ...]) -> Iterator[tuple[Path, str]]:
    """``(path, speaker)`` of audio files at depth ``speaker/chapter/file``, sorted."""
    for speaker_dir in _sorted_dirs(root):
        for chapter_dir in _sorted_dirs(Path(speaker_dir.path)):
            names = sorted(e.name for e in os.scandir(chapter_dir.path)
                           if e.is_file() and not e.name.startswith("."))
            for name in names:
                if os.path.splitext(name)[1].lower() in extensions:
                    yield Path(chapter_dir.path) / name, speaker_dir.name


def _sorted_dirs(path: Path) -> list[os.DirEntry]:
    entries = [e for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".")]
    return sorted(entries, key=lambda e: e.name)


def _pattern_files(root: Path, extensions: tuple[str, ...]) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if os.path.splitext(name)[1].lower() in extensions:
                yield Path(dirpath) / name


def _normalise_extensions(extensions: Iterable[str]) -> tuple[str, ...]:
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    for ext in exts:
        check_extension("x" + ext)
    return exts


class _Collector:
    """Turns files into utterances, applying ``on_error``, ``min_samples`` and ``keep_ids``."""

    def __init__(self, source: Path, on_error: str, min_samples: int, verify: bool,
                 keep_ids: Collection[str] | None) -> None:
        _check_on_error(on_error)
        if min_samples < 0:
            raise ValueError(f"min_samples={min_samples}: must be >= 0 (samples at 16 kHz)")
        self.on_error = on_error
        self.verify = verify
        self.keep_ids = None if keep_ids is None else set(keep_ids)
        self.report = ScanReport(source, min_samples=min_samples)
        self.utterances: list[Utterance] = []
        self.speakers: set[str] = set()
        self.listed = 0  # audio files or lines seen, whether opened or not

    def wanted(self, utt_id: str, speaker: str) -> bool:
        """Record a listed file; whether to open it (its id is kept)."""
        self.listed += 1
        self.speakers.add(speaker)
        return self.keep_ids is None or utt_id in self.keep_ids

    def fail(self, path: Path, error: AudioError | CorpusError) -> None:
        self.report.num_found += 1
        if self.on_error == "raise":
            raise error
        self.report.skipped.append((path, str(error)))

    def add(self, utt_id: str, path: Path, speaker: str, expected: int | None = None) -> None:
        """Read the header of ``path`` (length check against ``expected`` if given) and keep it."""
        try:
            num_samples = audio_info(path, check_end=self.verify).num_samples_at(SAMPLE_RATE)
        except AudioError as err:
            self.fail(path, err)
            return
        if expected is not None and expected != num_samples:
            self.fail(path, CorpusError(
                f"{path}: the manifest says {expected} samples but the header gives "
                f"{num_samples} at 16 kHz; regenerate the manifest (scripts/make_manifest.py)"))
            return
        self.keep(Utterance(utt_id, path, num_samples, speaker))

    def keep(self, utt: Utterance) -> None:
        if utt.num_samples >= self.report.min_samples:
            self.report.num_found += 1
            self.utterances.append(utt)
        elif self.on_error == "raise":
            raise CorpusError(
                f"{utt.path}: {utt.num_samples} samples, shorter than min_samples="
                f"{self.report.min_samples} (the training window); drop such files with "
                "on_error='skip' or lower min_samples")
        else:
            self.report.num_found += 1
            self.report.too_short.append((utt.path, utt.num_samples))

    def corpus(self, root: Path) -> Corpus:
        self.report.warn()
        return Corpus(self.utterances, root, speakers=self.speakers, report=self.report)


def scan_directory(
    root: str | Path,
    extensions: Iterable[str] = (".flac", ".wav"),
    speaker_pattern: str | None = None,
    on_error: str = "skip",
    min_samples: int = 0,
    verify: bool = True,
    ids: str = "stem",
    keep_ids: Collection[str] | None = None,
) -> Corpus:
    """Scan a directory of audio files into a :class:`Corpus` (headers only, no decoding).

    Args:
        root: LibriSpeech layout ``root/<speaker>/<chapter>/<utt>.<ext>`` unless
            ``speaker_pattern`` is given.
        extensions: file endings taken as audio (others are ignored).
        speaker_pattern: a regex searched in each path relative to ``root`` (``/``-separated);
            its group ``speaker``, else its first group, is the speaker. All audio files under
            ``root`` at any depth are taken; one that does not match follows ``on_error``.
            Example for VCTK: ``r"^wav48/(p\\d+)/"``.
        on_error: ``"skip"`` or ``"raise"`` for unusable files.
        min_samples: files shorter than this (samples at 16 kHz) follow ``on_error``.
        verify: decode each file's last sample to catch truncated files (about 0.1 ms a file).
        ids: ``"stem"`` (file name without extension, as LibriSpeech) or ``"path"`` (path
            relative to ``root`` without extension, for trees whose file names repeat).
        keep_ids: open only the files with these utterance ids (a split); the others are not
            opened, but their speakers still enter the speaker list.

    The speaker list holds every speaker of the tree, so corpora of different splits of one
    tree share speaker indices.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"corpus root {root} is not a directory; check data.root")
    if ids not in ID_STYLES:
        raise ValueError(f"ids={ids!r}: expected one of {ID_STYLES}")
    exts = _normalise_extensions(extensions)
    collector = _Collector(root, on_error, min_samples, verify, keep_ids)
    if speaker_pattern is None:
        for path, speaker in _librispeech_files(root, exts):
            utt_id = _utterance_id(path, root, ids)
            if collector.wanted(utt_id, speaker):
                collector.add(utt_id, path, speaker)
    else:
        regex = re.compile(speaker_pattern)
        if regex.groups == 0:
            raise ValueError(f"speaker_pattern={speaker_pattern!r} has no group; put the speaker "
                             r"part in parentheses, e.g. r'^(\w+)/'")
        for path in _pattern_files(root, exts):
            rel = path.relative_to(root).as_posix()
            match = regex.search(rel)
            if match is None:
                collector.listed += 1
                collector.fail(path, CorpusError(
                    f"{path}: speaker_pattern {speaker_pattern!r} does not match {rel!r}; fix "
                    "the pattern or move the file"))
                continue
            speaker = match.group("speaker") if "speaker" in regex.groupindex else match.group(1)
            utt_id = _utterance_id(path, root, ids)
            if collector.wanted(utt_id, speaker):
                collector.add(utt_id, path, speaker)
    if collector.listed == 0:
        layout = ("<speaker>/<chapter>/<utt>" if speaker_pattern is None
                  else f"speaker_pattern {speaker_pattern!r}")
        raise CorpusError(f"{root}: no audio files ({', '.join(exts)}) in layout {layout}")
    return collector.corpus(root)


# --------------------------------------------------------------------------- manifests
def _manifest_lines(path: Path) -> tuple[Path, list[str]]:
    """The root (first line; relative to the manifest's directory if relative) and the rest."""
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist; write one with "
                                "scripts/make_manifest.py ROOT OUT.tsv")
    lines = path.read_text().splitlines()
    if not lines or not lines[0].strip():
        raise CorpusError(f"{path}: the first line must be the corpus root directory")
    root = Path(lines[0].strip()).expanduser()
    return (root if root.is_absolute() else path.parent / root), lines[1:]


def read_manifest(
    path: str | Path,
    on_error: str = "skip",
    min_samples: int = 0,
    verify: bool = True,
    ids: str = "stem",
    keep_ids: Collection[str] | None = None,
) -> Corpus:
    """Read a manifest TSV into a :class:`Corpus`.

    Format (fairseq's, with a speaker column added): the first line is the root directory, then
    one line per file ``relative_path<TAB>num_samples<TAB>speaker``. ``num_samples`` counts
    samples at 16 kHz, which is fairseq's frame count for 16 kHz audio. In a two-column
    (plain fairseq) manifest the speaker is the first component of the relative path, as in
    LibriSpeech. A relative root is taken relative to the manifest's directory.

    Args:
        on_error: ``"skip"`` or ``"raise"`` for bad lines and unusable files.
        min_samples: files shorter than this (samples at 16 kHz) follow ``on_error``.
        verify: open each file's header (and decode its last sample) to check that it exists,
            is readable and has the length the manifest says; ``False`` trusts the manifest
            and checks only the extensions.
        ids: ``"stem"`` or ``"path"`` (relative path without extension).
        keep_ids: take only these utterance ids (a split); every line's speaker still enters
            the speaker list.
    """
    path = Path(path).expanduser()
    if ids not in ID_STYLES:
        raise ValueError(f"ids={ids!r}: expected one of {ID_STYLES}")
    root, lines = _manifest_lines(path)
    if verify and not root.is_dir():
        raise FileNotFoundError(f"{path}, line 1: root {root} is not a directory; fix the first "
                                "line of the manifest")
    collector = _Collector(path, on_error, min_samples, verify, keep_ids)
    for number, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        try:
            rel, expected, speaker = _parse_manifest_line(line, path, number)
            audio = root / rel
            check_extension(audio)
        except (CorpusError, AudioError) as err:
            collector.listed += 1
            collector.fail(path, err)
            continue
        utt_id = Path(rel).stem if ids == "stem" else Path(rel).with_suffix("").as_posix()
        if not collector.wanted(utt_id, speaker):
            continue
        if verify:
            collector.add(utt_id, audio, speaker, expected=expected)
        else:
            collector.keep(Utterance(utt_id, audio, expected, speaker))
    return collector.corpus(root)


def _parse_manifest_line(line: str, path: Path, number: int) -> tuple[str, int, str]:
    cols = line.rstrip("\n").split("\t")
    where = f"{path}, line {number}"
    if len(cols) not in (2, 3) or not all(c.strip() for c in cols):
        raise CorpusError(f"{where}: expected 'relative_path<TAB>num_samples[<TAB>speaker]', "
                          f"got {line!r}; fix or delete the line")
    try:
        num_samples = int(cols[1])
    except ValueError:
        raise CorpusError(f"{where}: num_samples {cols[1]!r} is not an integer; fix the "
                          "line or regenerate the manifest") from None
    rel = cols[0].strip()
    speaker = cols[2].strip() if len(cols) == 3 else Path(rel).parts[0]
    return rel, num_samples, speaker


def write_manifest(corpus: Corpus, path: str | Path) -> None:
    """Write ``corpus`` as a three-column manifest TSV (see :func:`read_manifest`)."""
    path = Path(path)
    root = corpus.root.resolve()
    rows = [str(root)]
    for u in corpus.utterances:
        rel = os.path.relpath(Path(u.path).resolve(), root)
        for text in (rel, u.speaker):
            if "\t" in text or "\n" in text:
                raise CorpusError(f"{text!r}: a tab or newline cannot be written to a manifest")
        rows.append(f"{Path(rel).as_posix()}\t{u.num_samples}\t{u.speaker}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")


# --------------------------------------------------------------------------- splits
def read_split(path: str | Path) -> list[str]:
    """Utterance ids of a split list: one per line (first field); blank and ``#`` lines skipped.

    Raises:
        FileNotFoundError: no such file.
        CorpusError: an id occurs twice (the line numbers are given).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"split list {path} does not exist")
    ids: list[str] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if fields[0] in first_line:
            raise CorpusError(f"{path}, line {number}: id {fields[0]!r} already on line "
                              f"{first_line[fields[0]]}; remove the duplicate")
        first_line[fields[0]] = number
        ids.append(fields[0])
    return ids


def resolve_split(split: str | Path, root: Path | None) -> Path:
    """A split file: ``split`` itself if it is an existing file or looks like a path, else the
    named split ``root/splits/<split>.txt``."""
    candidate = Path(split).expanduser()
    if candidate.is_file() or candidate.suffix or len(candidate.parts) > 1 or root is None:
        return candidate
    named = root / "splits" / f"{split}.txt"
    if not named.is_file():
        available = sorted(p.stem for p in (root / "splits").glob("*.txt"))
        raise FileNotFoundError(f"split {split!r}: {named} does not exist; available named "
                                f"splits under {root / 'splits'}: {available or 'none'}")
    return named


def load_corpus(
    root: str | Path | None = None,
    manifest: str | Path | None = None,
    split: str | Path | None = None,
    on_error: str = "skip",
    min_samples: int = 0,
    verify: bool = True,
) -> Corpus:
    """A corpus from a directory or a manifest, optionally restricted to a split.

    Args:
        root: a LibriSpeech-layout directory (not scanned when ``manifest`` is given, but
            still used to find named splits).
        manifest: a manifest TSV; takes precedence over ``root`` for the file list.
        split: a split list file, or a split name resolved as ``<root>/splits/<name>.txt``
            (the manifest's root when only a manifest is given). Only the split's files are
            opened, so ``on_error`` applies to them alone; the speaker list is the whole tree's.
        on_error, min_samples, verify: see :func:`scan_directory`.

    Split ids whose files the scan dropped (unusable or shorter than ``min_samples``, with
    ``on_error="skip"``) are left out with a warning; ids the corpus does not have raise
    :class:`CorpusError`.
    """
    if manifest is None and root is None:
        raise ValueError("load_corpus needs root= (a corpus directory) or manifest= (a TSV)")
    wanted: list[str] | None = None
    split_path = None
    if split is not None:
        if root is not None:
            split_root = Path(root).expanduser()
        else:
            split_root = _manifest_lines(Path(manifest).expanduser())[0]  # type: ignore[arg-type]
        split_path = resolve_split(split, split_root)
        wanted = read_split(split_path)
    if manifest is not None:
        corpus = read_manifest(manifest, on_error=on_error, min_samples=min_samples,
                               verify=verify, keep_ids=wanted)
    else:
        corpus = scan_directory(root, on_error=on_error,  # type: ignore[arg-type]
                                min_samples=min_samples, verify=verify, keep_ids=wanted)
    if wanted is None:
        return corpus
    dropped = corpus.report.dropped_ids() if corpus.report else set()
    lost = [i for i in wanted if i not in corpus and i in dropped]
    if lost:
        warnings.warn(f"{split_path}: {len(lost)} of {len(wanted)} ids were dropped by the scan "
                      f"(see its summary) and are left out, e.g. {', '.join(lost[:_SHOWN])}",
                      CorpusWarning, stacklevel=2)
    return corpus.subset([i for i in wanted if i in corpus or i not in dropped],
                         source=split_path)  # type: ignore[arg-type]
