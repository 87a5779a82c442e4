"""A corpus: the usable utterances (id, path, length, speaker), the speaker list that indexes
them, and the report of what the scan that built it dropped.

All lengths are in samples at 16 kHz (:data:`~ssl_speech.data.audio.SAMPLE_RATE`), whatever the
rate of the file.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ssl_speech.data.audio import SAMPLE_RATE

ON_ERROR = ("skip", "raise")
ID_STYLES = ("stem", "path")
SHOWN = 5  # names shown in a summary before "and N more"


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


@dataclass(frozen=True)
class FileStamp:
    """A file's size and modification time when its header was read, and its length then.

    Attributes:
        size: bytes.
        mtime_ns: modification time in nanoseconds (``os.stat().st_mtime_ns``).
        num_samples: length in samples at 16 kHz.
    """

    size: int
    mtime_ns: int
    num_samples: int


@dataclass
class ScanReport:
    """What a scan dropped: unusable files (``skipped``) and files below ``min_samples``.

    Attributes:
        source: the directory or manifest scanned.
        num_found: audio files (or manifest lines) looked at.
        skipped: ``(path, reason)`` of each file dropped as unusable.
        too_short: ``(path, num_samples)`` of each file shorter than ``min_samples``.
        min_samples: the threshold used, in samples at 16 kHz.
        stamps: ``{relative path: FileStamp}`` of every file whose header was usable (too
            short ones included): what a manifest cache stores.
        num_opened: files whose header was read from the file (the others came from a cache).
    """

    source: Path
    num_found: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    too_short: list[tuple[Path, int]] = field(default_factory=list)
    min_samples: int = 0
    stamps: dict[str, FileStamp] = field(default_factory=dict)
    num_opened: int = 0

    @property
    def num_dropped(self) -> int:
        return len(self.skipped) + len(self.too_short)

    def summary(self) -> str:
        """One paragraph: counts, then the first few files of each kind."""
        parts = [f"{self.source}: {self.num_found} files found, {self.num_dropped} dropped."]
        if self.skipped:
            shown = "; ".join(reason for _, reason in self.skipped[:SHOWN])
            parts.append(f"{len(self.skipped)} unusable (skipped with on_error='skip'; pass "
                         f"on_error='raise' to stop at the first): {shown}{_more(self.skipped)}")
        if self.too_short:
            shown = ", ".join(f"{p} ({n} samples)" for p, n in self.too_short[:SHOWN])
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
    return f" ... and {len(items) - SHOWN} more" if len(items) > SHOWN else ""


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
                f"{self.root}, e.g. {', '.join(missing[:SHOWN])}; check that the split list "
                "belongs to this corpus"
            )
        return Corpus([self.utterances[self._by_id[i]] for i in ids], self.root,
                      speakers=self.speakers, report=self.report)


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r}: expected one of {ON_ERROR}")


def check_ids(ids: str) -> None:
    if ids not in ID_STYLES:
        raise ValueError(f"ids={ids!r}: expected one of {ID_STYLES}")
