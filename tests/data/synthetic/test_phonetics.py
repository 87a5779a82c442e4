"""The phone inventory, lexicon and utterance plans of the embedded corpus."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ssl_speech.data.synthetic import PHONES


def test_language_covers_the_inventory_and_respects_durations() -> None:
    from ssl_speech.data.synthetic.phonetics import Lexicon, plan_utterance

    rng = np.random.default_rng(0)
    lexicon = Lexicon(rng, size=60)
    occurrences = np.bincount([p.phone for w in lexicon.words for p in w], minlength=len(PHONES))
    assert len(lexicon.words) == 60 and occurrences[1:].min() >= 3 and occurrences[0] == 0
    for target in (2.0, 5.0, 9.5):
        tokens = plan_utterance(lexicon, rng, target, 10.0, rate=1.0)
        assert tokens[0].phone == tokens[-1].phone == 0 and tokens[0].start == 0
        assert all(a.end == b.start and a.end > a.start for a, b in zip(tokens, tokens[1:]))
        assert tokens[-1].end % 2 == 0 and tokens[-1].end * 0.005 <= 10.0
    with pytest.raises(ValueError, match="lexicon size"):
        Lexicon(rng, size=10)
    with pytest.raises(ValueError, match="neighbour_share"):
        Lexicon(rng, size=60, neighbour_share=1.0)


def _medial_minimal_pairs(words: list[tuple[int, ...]]) -> int:
    """Pairs of words that differ in one segment with a phone of the word on each side."""
    frames: Counter = Counter()
    for word in words:
        for i in range(1, len(word) - 1):
            frames[(word[:i], word[i + 1:])] += 1
    return sum(n * (n - 1) // 2 for n in frames.values())


def test_lexicon_grows_in_neighbourhoods_around_frequent_words() -> None:
    from ssl_speech.data.synthetic.phonetics import INVENTORY, Lexicon

    def ranked_words(share: float) -> list[tuple[int, ...]]:
        lexicon = Lexicon(np.random.default_rng(1), size=400, neighbour_share=share)
        assert np.all(np.diff(lexicon.probs) < 0) and lexicon.probs.sum() == pytest.approx(1.0)
        # the 100 most frequent words carry about 70 % of the tokens
        assert 0.6 < lexicon.probs[:100].sum() < 0.8
        words = [tuple(p.phone for p in w) for w in lexicon.words]
        assert len(set(words)) == 400
        return words

    # minimal pairs among frequent words make a phone context recur with other centre phones
    with_neighbours, without = ranked_words(0.5), ranked_words(0.0)
    assert _medial_minimal_pairs(with_neighbours[:100]) >= 30
    assert _medial_minimal_pairs(without[:100]) <= 10
    # frequent words are short (the law of abbreviation): mostly one syllable
    syllables = np.array([sum(INVENTORY[p].is_vowel for p in w) for w in with_neighbours])
    assert np.mean(syllables[:100] == 1) > 0.7 and syllables[:100].mean() < syllables[-100:].mean()
