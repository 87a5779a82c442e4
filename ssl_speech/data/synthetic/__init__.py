"""The embedded corpus: speech-like audio with exact phone alignments, generated on first use.

``phonetics`` (phone inventory, lexicon, utterance plans) → ``synthesis`` (source-filter
audio) → ``generate`` (the corpus on disk, its splits, alignments and ABX items, the cache).
"""

from ssl_speech.data.synthetic.generate import *  # noqa: F403
from ssl_speech.data.synthetic.generate import __all__  # noqa: F401
