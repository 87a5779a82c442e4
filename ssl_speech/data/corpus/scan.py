"""Scanning a directory of audio files into a corpus: listing, headers read by threads, and the
manifest cache shared by later runs and by every DDP rank."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from pathlib import Path

from ssl_speech.data.corpus.collect import DEFAULT_THREADS, Collector, FileJob, check_options
from ssl_speech.data.corpus.discovery import list_audio_files, normalise_extensions
from ssl_speech.data.corpus.manifest_cache import cache_path, read_cache, write_cache
from ssl_speech.data.corpus.utterances import Corpus, CorpusError, check_ids


def scan_directory(
    root: str | Path,
    extensions: Iterable[str] = (".flac", ".wav"),
    speaker_pattern: str | None = None,
    on_error: str = "skip",
    min_samples: int = 0,
    verify: bool = True,
    ids: str = "stem",
    keep_ids: Collection[str] | None = None,
    threads: int = DEFAULT_THREADS,
    cache: bool | str | Path = False,
    rank: int = 0,
    barrier: Callable[[], None] | None = None,
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
        threads: header readers (the result does not depend on their number).
        cache: keep the headers in the manifest cache (:mod:`.manifest_cache`) and reuse them:
            ``True`` for the library's cache directory, or a directory.
        rank, barrier: under DDP, rank 0 scans and writes the cache, then calls ``barrier``;
            the other ranks call ``barrier`` first and then scan with the fresh cache, so they
            stat the files but open none that rank 0 read. Every rank must call this (the
            barrier is a collective), e.g. ``barrier=torch.distributed.barrier``.

    The speaker list holds every speaker of the tree, so corpora of different splits of one
    tree share speaker indices.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"corpus root {root} is not a directory; check data.root")
    check_ids(ids)
    check_options(on_error, min_samples, threads)
    exts = normalise_extensions(extensions)
    if rank < 0:
        raise ValueError(f"rank={rank}: must be >= 0")
    if rank > 0 and barrier is not None:
        barrier()  # rank 0 writes the cache first
        return _scan(root, exts, speaker_pattern, on_error, min_samples, verify, ids, keep_ids,
                     threads, cache, write=False)
    try:
        return _scan(root, exts, speaker_pattern, on_error, min_samples, verify, ids, keep_ids,
                     threads, cache, write=True)
    finally:
        if barrier is not None:
            barrier()  # also on failure, so the other ranks reach their own error


def _scan(root: Path, exts: tuple[str, ...], speaker_pattern: str | None, on_error: str,
          min_samples: int, verify: bool, ids: str, keep_ids: Collection[str] | None,
          threads: int, cache: bool | str | Path, write: bool) -> Corpus:
    listed = list_audio_files(root, exts, speaker_pattern, ids)
    if not listed:
        layout = ("<speaker>/<chapter>/<utt>" if speaker_pattern is None
                  else f"speaker_pattern {speaker_pattern!r}")
        raise CorpusError(f"{root}: no audio files ({', '.join(exts)}) in layout {layout}")
    collector = Collector(root, on_error, min_samples, verify, keep_ids, threads)
    for f in listed:
        collector.add(FileJob(f.path, f.utt_id, f.speaker or "", error=f.error, key=f.rel))
    entry = previous = None
    if cache is not False:
        options = {"extensions": exts, "speaker_pattern": speaker_pattern, "ids": ids,
                   "verify": verify}
        entry = cache_path(root, options, None if cache is True else cache)
        previous = read_cache(entry, root)
    collector.run(previous)
    if entry is not None and write:
        wanted = None if keep_ids is None else set(keep_ids)
        probed = {f.rel for f in listed if wanted is None or f.utt_id in wanted}
        write_cache(entry, root, listed, collector.report.stamps, previous or {}, probed)
    return collector.corpus(root)
