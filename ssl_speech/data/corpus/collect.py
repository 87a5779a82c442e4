"""From a list of files to a corpus: headers read by a pool of threads, then ``on_error``,
``min_samples`` and the split applied file by file in list order.

Reading a header is I/O (an ``open``, a header parse, a seek to the last sample), during which
libsndfile holds no Python lock, so threads overlap the waits; on a network file system that is
most of a scan's time. The result does not depend on the number of threads: files are judged in
list order, so ``on_error="raise"`` stops at the first bad file of the list, as a serial scan
would. A header can be taken from ``known`` (a manifest cache) instead of the file when the
file's size and modification time are the ones recorded.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ssl_speech.data.audio import SAMPLE_RATE, AudioError, audio_info
from ssl_speech.data.corpus.utterances import (
    Corpus,
    CorpusError,
    FileStamp,
    ScanReport,
    Utterance,
    check_on_error,
)

DEFAULT_THREADS = 8
_CHUNK = 2048  # files judged per round: bounds the work done past a fatal file
_SLICE = 32  # files per thread task


@dataclass(frozen=True)
class FileHeader:
    """A file's length at 16 kHz (or the error that stops its use) and its stamp.

    ``opened`` is false when the length came from a matching :class:`FileStamp`.
    """

    num_samples: int | None
    error: AudioError | None
    size: int = -1
    mtime_ns: int = -1
    opened: bool = True


def read_header(path: Path, verify: bool, known: FileStamp | None = None) -> FileHeader:
    """The header of ``path``, taken from ``known`` when its size and mtime still match."""
    try:
        stat = os.stat(path)
        size, mtime_ns = stat.st_size, stat.st_mtime_ns
    except OSError:
        size = mtime_ns = -1  # audio_info below names the problem
    if known is not None and (known.size, known.mtime_ns) == (size, mtime_ns):
        return FileHeader(known.num_samples, None, size, mtime_ns, opened=False)
    try:
        num_samples = audio_info(path, check_end=verify).num_samples_at(SAMPLE_RATE)
    except AudioError as err:
        return FileHeader(None, err, size, mtime_ns)
    return FileHeader(num_samples, None, size, mtime_ns)


def check_options(on_error: str, min_samples: int, threads: int) -> None:
    """Validate the options every corpus reader takes (before any file is touched)."""
    check_on_error(on_error)
    if min_samples < 0:
        raise ValueError(f"min_samples={min_samples}: must be >= 0 (samples at 16 kHz)")
    if threads < 1:
        raise ValueError(f"threads={threads}: must be >= 1 (header readers)")


@dataclass(frozen=True)
class FileJob:
    """One listed file to judge: an error known from its name, or a header to read."""

    path: Path
    utt_id: str = ""
    speaker: str = ""
    expected: int | None = None  # the length a manifest promises
    error: CorpusError | AudioError | None = None
    key: str = ""  # its key in ``known`` (the relative path)
    trusted: bool = False  # take ``expected`` without opening the file


def _opens(job: FileJob) -> bool:
    """Whether judging ``job`` needs its file's header."""
    return job.error is None and not job.trusted


class Collector:
    """Turns listed files into utterances, applying ``on_error``, ``min_samples`` and
    ``keep_ids``; its report records every usable file's stamp (what a manifest cache keeps).

    Args:
        source: the directory or manifest, named in the report.
        on_error: ``"skip"`` or ``"raise"``.
        min_samples: shorter files follow ``on_error`` (samples at 16 kHz).
        verify: decode each file's last sample (catches truncated files).
        keep_ids: take only these utterance ids; the others are not opened.
        threads: header readers (1: in this thread).
    """

    def __init__(self, source: Path, on_error: str, min_samples: int, verify: bool,
                 keep_ids: Collection[str] | None, threads: int = DEFAULT_THREADS) -> None:
        check_options(on_error, min_samples, threads)
        self.on_error, self.verify, self.threads = on_error, verify, threads
        self.keep_ids = None if keep_ids is None else set(keep_ids)
        self.report = ScanReport(source, min_samples=min_samples)
        self.utterances: list[Utterance] = []
        self.speakers: set[str] = set()
        self.listed = 0  # audio files or lines seen, whether opened or not
        self._jobs: list[FileJob] = []

    def add(self, job: FileJob) -> None:
        """Record a listed file; it is judged by :meth:`run` unless the split leaves it out."""
        self.listed += 1
        if job.error is None:
            self.speakers.add(job.speaker)
            if self.keep_ids is not None and job.utt_id not in self.keep_ids:
                return
        self._jobs.append(job)

    def run(self, known: Mapping[str, FileStamp] | None = None) -> None:
        """Read the headers of the listed files (threads) and judge them in list order."""
        jobs, self._jobs = self._jobs, []
        pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        try:
            for first in range(0, len(jobs), _CHUNK):
                chunk = jobs[first : first + _CHUNK]
                work = [(j.path, None if known is None else known.get(j.key))
                        for j in chunk if _opens(j)]
                # A task per slice, not per file: a future costs about as much as a cached stat.
                slices = [work[i : i + _SLICE] for i in range(0, len(work), _SLICE)]
                headers = iter([h for part in (pool.map(self._read_slice, slices) if pool
                                               else map(self._read_slice, slices)) for h in part])
                for job in chunk:
                    self._judge(job, next(headers) if _opens(job) else None)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)

    def _read_slice(self, work: list[tuple[Path, FileStamp | None]]) -> list[FileHeader]:
        return [read_header(path, self.verify, stamp) for path, stamp in work]

    def _judge(self, job: FileJob, header: FileHeader | None) -> None:
        if job.trusted and job.error is None:
            self.keep(Utterance(job.utt_id, job.path, job.expected, job.speaker))  # type: ignore[arg-type]
            return
        if header is None:
            self.fail(job.path, job.error)  # type: ignore[arg-type]
            return
        self.report.num_opened += header.opened
        if header.error is not None:
            self.fail(job.path, header.error)
            return
        self.report.stamps[job.key] = FileStamp(header.size, header.mtime_ns,
                                                header.num_samples)  # type: ignore[arg-type]
        if job.expected is not None and job.expected != header.num_samples:
            self.fail(job.path, CorpusError(
                f"{job.path}: the manifest says {job.expected} samples but the header gives "
                f"{header.num_samples} at 16 kHz; regenerate the manifest "
                "(scripts/make_manifest.py)"))
            return
        self.keep(Utterance(job.utt_id, job.path, header.num_samples, job.speaker))  # type: ignore[arg-type]

    def fail(self, path: Path, error: AudioError | CorpusError) -> None:
        self.report.num_found += 1
        if self.on_error == "raise":
            raise error
        self.report.skipped.append((path, str(error)))

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

