"""Corpora: scanning a directory or reading a manifest into a list of utterances, once, up front.

A :class:`Corpus` is the list of usable utterances (id, path, length, speaker) and the sorted
speaker list that maps speakers to class indices. It is built from

- a directory in LibriSpeech layout, ``root/<speaker>/<chapter>/<utt>.flac`` (``.wav`` too):
  only audio files at exactly that depth are taken, so metadata beside the audio (alignments,
  split lists, ABX items, ``corpus.json``) is ignored;
- any other tree with ``speaker_pattern``, a regular expression searched in each file's path
  relative to the root whose first group (or group ``speaker``) is the speaker;
- a manifest TSV as fairseq writes it (see :func:`read_manifest`);
- lhotse recordings and supervisions, when lhotse is installed (see :func:`read_lhotse`).

Lengths come from file headers, never from decoding, read by a pool of threads; the manifest
cache keeps them for the next scan and for the other DDP ranks. Files that cannot be used are
handled by ``on_error``: ``"raise"`` stops at the first with an
:class:`~ssl_speech.data.audio.AudioError` naming it, ``"skip"`` drops them, counts them in a
:class:`ScanReport` and warns once with a summary. Files shorter than ``min_samples`` (usually
the training window) are treated the same way: an error with ``"raise"``, dropped and listed in
the summary with ``"skip"``.

The speaker list of a scanned corpus holds every speaker of the tree or manifest, including
those whose files were dropped or left out by a split, so corpora of different splits of one
tree share speaker indices.

Modules: ``utterances`` (the corpus itself) ← ``discovery`` (listing a tree) ← ``collect``
(headers, on_error) ← ``manifest`` (TSV), ``manifest_cache``, ``scan``, ``lhotse_manifest``,
``splits`` ← ``load`` (:func:`load_corpus`).
"""

from ssl_speech.data.corpus.collect import DEFAULT_THREADS
from ssl_speech.data.corpus.lhotse_manifest import read_lhotse
from ssl_speech.data.corpus.load import load_corpus
from ssl_speech.data.corpus.manifest import read_manifest, write_manifest
from ssl_speech.data.corpus.scan import scan_directory
from ssl_speech.data.corpus.splits import read_split, resolve_split
from ssl_speech.data.corpus.utterances import (
    ID_STYLES,
    ON_ERROR,
    Corpus,
    CorpusError,
    CorpusWarning,
    FileStamp,
    ScanReport,
    Utterance,
)

__all__ = [
    "DEFAULT_THREADS",
    "ID_STYLES",
    "ON_ERROR",
    "Corpus",
    "CorpusError",
    "CorpusWarning",
    "FileStamp",
    "ScanReport",
    "Utterance",
    "load_corpus",
    "read_lhotse",
    "read_manifest",
    "read_split",
    "resolve_split",
    "scan_directory",
    "write_manifest",
]
