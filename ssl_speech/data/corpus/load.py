"""Loading a corpus: a directory, a manifest TSV or lhotse manifests, optionally one split."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

from ssl_speech.data.corpus.collect import DEFAULT_THREADS
from ssl_speech.data.corpus.lhotse_manifest import is_lhotse_manifest, read_lhotse
from ssl_speech.data.corpus.manifest import manifest_lines, read_manifest
from ssl_speech.data.corpus.scan import scan_directory
from ssl_speech.data.corpus.splits import read_split, resolve_split
from ssl_speech.data.corpus.utterances import SHOWN, Corpus, CorpusWarning


def load_corpus(
    root: str | Path | None = None,
    manifest: str | Path | None = None,
    split: str | Path | None = None,
    on_error: str = "skip",
    min_samples: int = 0,
    verify: bool = True,
    threads: int = DEFAULT_THREADS,
    cache: bool | str | Path = False,
    rank: int = 0,
    barrier: Callable[[], None] | None = None,
) -> Corpus:
    """A corpus from a directory or a manifest, optionally restricted to a split.

    Args:
        root: a LibriSpeech-layout directory (not scanned when ``manifest`` is given, but
            still used to find named splits).
        manifest: a manifest TSV, or lhotse recordings (``*recordings*.jsonl.gz``, with the
            supervisions beside them); takes precedence over ``root`` for the file list.
        split: a split list file, or a split name resolved as ``<root>/splits/<name>.txt``
            (the manifest's root when only a manifest is given). Only the split's files are
            opened, so ``on_error`` applies to them alone; the speaker list is the whole tree's.
        on_error, min_samples, verify, threads: see :func:`scan_directory`.
        cache, rank, barrier: the manifest cache and its DDP protocol, for a scanned
            directory (see :func:`scan_directory`); every rank must call this when ``barrier``
            is given.

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
            split_root = _manifest_root(Path(manifest).expanduser())  # type: ignore[arg-type]
        split_path = resolve_split(split, split_root)
        wanted = read_split(split_path)
    if manifest is not None and is_lhotse_manifest(manifest):
        corpus = read_lhotse(manifest, on_error=on_error, min_samples=min_samples,
                             verify=verify, keep_ids=wanted, threads=threads)
    elif manifest is not None:
        corpus = read_manifest(manifest, on_error=on_error, min_samples=min_samples,
                               verify=verify, keep_ids=wanted, threads=threads)
    else:
        corpus = scan_directory(root, on_error=on_error,  # type: ignore[arg-type]
                                min_samples=min_samples, verify=verify, keep_ids=wanted,
                                threads=threads, cache=cache, rank=rank, barrier=barrier)
    if wanted is None:
        return corpus
    dropped = corpus.report.dropped_ids() if corpus.report else set()
    lost = [i for i in wanted if i not in corpus and i in dropped]
    if lost:
        warnings.warn(f"{split_path}: {len(lost)} of {len(wanted)} ids were dropped by the scan "
                      f"(see its summary) and are left out, e.g. {', '.join(lost[:SHOWN])}",
                      CorpusWarning, stacklevel=2)
    return corpus.subset([i for i in wanted if i in corpus or i not in dropped],
                         source=split_path)  # type: ignore[arg-type]


def _manifest_root(manifest: Path) -> Path | None:
    """The root a named split is looked up under: a TSV's first line; none for lhotse."""
    return None if is_lhotse_manifest(manifest) else manifest_lines(manifest)[0]
