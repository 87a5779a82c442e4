"""The embedded corpus: speech-like audio with exact phone alignments, generated on first use.

``inventory`` (the phones) → ``phonetics`` (lexicon, utterance plans) → ``voices`` (talkers,
recording conditions) → ``synthesis`` (source-filter audio) → ``generate`` (the corpus written
into a directory: audio, splits, alignments, ABX items) → ``cache`` (atomic placement, lock,
the cache directory) and ``statistics``.
"""

from ssl_speech.data.synthetic.cache import (
    corpus_dirname,
    ensure_corpus,
    ensure_corpus_at,
    generate_corpus,
    is_complete,
)
from ssl_speech.data.synthetic.generate import GENERATOR_VERSION, PHONES, SyntheticCorpusSpec
from ssl_speech.data.synthetic.statistics import corpus_statistics, format_statistics

__all__ = [
    "GENERATOR_VERSION",
    "PHONES",
    "SyntheticCorpusSpec",
    "corpus_dirname",
    "corpus_statistics",
    "ensure_corpus",
    "ensure_corpus_at",
    "format_statistics",
    "generate_corpus",
    "is_complete",
]
