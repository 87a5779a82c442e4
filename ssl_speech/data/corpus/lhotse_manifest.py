"""lhotse manifests (a RecordingSet and a SupervisionSet) read as a corpus, for users who keep
their data so. Needs the optional ``lhotse`` package (``pip install lhotse``).

Each recording is one utterance: its id is the recording id, its path the recording's single
file source, its length ``num_samples`` (converted to 16 kHz), its speaker the speaker of its
supervisions (all must agree). Supervision times are not used: the whole file is the
utterance, as for a scanned tree. Recordings with several sources, a non-file source (URL,
command, memory) or no speaker follow ``on_error``.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

from ssl_speech.data.audio import SAMPLE_RATE, resampled_length
from ssl_speech.data.corpus.collect import DEFAULT_THREADS, Collector, FileJob
from ssl_speech.data.corpus.utterances import Corpus, CorpusError

LHOTSE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")


def is_lhotse_manifest(path: str | Path) -> bool:
    """Whether ``path`` names a lhotse manifest (by its ending) rather than a TSV."""
    return str(path).endswith(LHOTSE_SUFFIXES)


def supervisions_beside(recordings: Path) -> Path:
    """lhotse's naming: ``<prefix>_recordings_<part>.jsonl.gz`` → ``..._supervisions_...``."""
    if "recordings" not in recordings.name:
        raise CorpusError(f"{recordings}: cannot find the supervisions beside a lhotse "
                          "manifest whose name lacks 'recordings'; pass supervisions= explicitly")
    return recordings.with_name(recordings.name.replace("recordings", "supervisions"))


def read_lhotse(
    recordings: str | Path,
    supervisions: str | Path | None = None,
    on_error: str = "skip",
    min_samples: int = 0,
    verify: bool = True,
    keep_ids: Collection[str] | None = None,
    threads: int = DEFAULT_THREADS,
) -> Corpus:
    """A :class:`Corpus` from lhotse recordings and supervisions (see module doc).

    Args:
        recordings: a RecordingSet manifest (``.jsonl.gz``, ``.jsonl`` or ``.json``).
        supervisions: its SupervisionSet; default: the file named as lhotse names it beside
            ``recordings``.
        on_error, min_samples, verify, keep_ids, threads: as for
            :func:`~ssl_speech.data.corpus.manifest.read_manifest`; ``verify`` opens each file
            and checks the length the recording declares.

    The root is the deepest directory holding every file.
    """
    try:
        from lhotse import RecordingSet, SupervisionSet, load_manifest
    except ImportError:
        raise ImportError("reading lhotse manifests needs lhotse: pip install lhotse") from None
    recordings = Path(recordings).expanduser()
    supervisions = (supervisions_beside(recordings) if supervisions is None
                    else Path(supervisions).expanduser())
    for path in (recordings, supervisions):
        if not path.is_file():
            raise FileNotFoundError(f"lhotse manifest {path} does not exist")
    recs = load_manifest(recordings)
    sups = load_manifest(supervisions)
    if not isinstance(recs, RecordingSet) or not isinstance(sups, SupervisionSet):
        raise CorpusError(f"{recordings} must hold recordings and {supervisions} supervisions "
                          f"(found {type(recs).__name__} and {type(sups).__name__})")
    speakers: dict[str, set[str]] = {}
    for sup in sups:
        if sup.speaker is not None:
            speakers.setdefault(sup.recording_id, set()).add(str(sup.speaker))
    collector = Collector(recordings, on_error, min_samples, verify, keep_ids, threads)
    paths = []
    for rec in recs:
        job = _job(rec, speakers.get(rec.id, set()), recordings, verify)
        paths.append(job.path)
        collector.add(job)
    if not paths:
        raise CorpusError(f"{recordings}: no recordings")
    collector.run()
    return collector.corpus(Path(os.path.commonpath([str(p.parent) for p in paths])))


def _job(rec, speakers: set[str], recordings: Path, verify: bool) -> FileJob:
    where = f"{recordings}: recording {rec.id!r}"
    if len(rec.sources) != 1 or rec.sources[0].type != "file":
        kinds = [s.type for s in rec.sources]
        return FileJob(recordings, error=CorpusError(
            f"{where} has sources {kinds}; only one 'file' source per recording can be read"))
    path = Path(rec.sources[0].source).expanduser().absolute()
    if len(speakers) != 1:
        detail = "no supervision with a speaker" if not speakers else f"speakers {sorted(speakers)}"
        return FileJob(path, error=CorpusError(
            f"{where} ({path}) has {detail}; give each recording one speaker"))
    expected = resampled_length(int(rec.num_samples), int(rec.sampling_rate), SAMPLE_RATE)
    return FileJob(path, rec.id, speakers.pop(), expected=expected, key=str(path),
                   trusted=not verify)
