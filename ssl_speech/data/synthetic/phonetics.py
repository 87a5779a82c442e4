"""A small random language for the embedded synthetic corpus, over the phones of
:mod:`~ssl_speech.data.synthetic.inventory`.

The language: a lexicon of random words built from syllables (onset, nucleus, coda) under
English-like phonotactics, drawn with Zipfian frequencies (short words frequent, so a few
function-like words recur in every utterance), and grown in phonological neighbourhoods: half
the words are a more frequent word with one segment replaced ("bit", "bat", "but"), so the same
phone context recurs with different centre phones, as minimal pairs do in natural lexicons.
Utterances are words and pauses. :func:`plan_utterance` turns words into timed :class:`Token` s.
All timing is in synthesis hops of 80 samples (5 ms at 16 kHz).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ssl_speech.data.synthetic.inventory import (  # noqa: F401 (the names callers import here)
    INVENTORY,
    PHONE_INDEX,
    PHONES,
    PLACES,
    SCHWA,
    SILENCE,
    Phone,
    Place,
)

HOP_SECONDS = 0.005  # the 80-sample synthesis hop at 16 kHz

# Phonotactics: weighted onsets, nuclei and codas, written as space-separated phone names.
_ONSETS = {
    "p": 3, "b": 3, "t": 4, "d": 3, "k": 4, "g": 2, "m": 4, "n": 3, "f": 3, "v": 1.5, "th": 1,
    "dh": 2.5, "s": 4, "z": 0.6, "sh": 1.5, "zh": 0.3, "hh": 3, "ch": 1.5, "jh": 1.5, "l": 3.5,
    "r": 3.5, "w": 3, "y": 1.5, "p l": 0.6, "b l": 0.6, "k l": 0.6, "g l": 0.4, "f l": 0.6,
    "s l": 0.4, "p r": 0.7, "b r": 0.7, "t r": 0.8, "d r": 0.6, "k r": 0.7, "g r": 0.6,
    "f r": 0.7, "th r": 0.4, "sh r": 0.2, "s p": 0.6, "s t": 0.9, "s k": 0.6, "s m": 0.3,
    "s n": 0.3, "s w": 0.3, "t w": 0.3, "k w": 0.5, "s t r": 0.3, "s p r": 0.2,
}
_NUCLEI = {
    "ah": 6, "ih": 5, "iy": 3.5, "eh": 3.5, "ae": 3, "aa": 2.5, "ao": 1.5, "uh": 1, "uw": 2,
    "er": 2, "ey": 2, "ay": 2, "oy": 0.5, "aw": 1, "ow": 2,
}
_CODAS = {
    "p": 1.5, "b": 0.8, "t": 4, "d": 3, "k": 2, "g": 0.8, "m": 2, "n": 5, "ng": 1.5, "f": 1,
    "v": 1.5, "th": 0.6, "dh": 0.3, "s": 3, "z": 3, "sh": 0.6, "zh": 0.3, "ch": 0.6, "jh": 0.6,
    "l": 3, "r": 2.5, "m p": 0.4, "n t": 0.6, "n d": 0.6, "ng k": 0.3, "s t": 0.6, "s k": 0.2,
    "s p": 0.1, "l t": 0.2, "l d": 0.3, "l k": 0.1, "l z": 0.2, "r t": 0.3, "r d": 0.3,
    "r k": 0.1, "r m": 0.1, "t s": 0.4, "k s": 0.4, "p s": 0.2, "n z": 0.5, "d z": 0.3,
    "k t": 0.2, "f t": 0.1,
}


@dataclass(frozen=True)
class WordPhone:
    """A phone of a lexical word with its prosodic marks."""

    phone: int
    stressed: bool  # nucleus of the word's stressed syllable
    reduced: bool  # unstressed nucleus that moves toward schwa


@dataclass(frozen=True)
class Token:
    """A timed phone of an utterance: hops ``[start, end)`` of 80 samples."""

    phone: int
    start: int
    end: int
    stressed: bool = False
    reduced: bool = False
    phrase_final: bool = False


def _table(weights: dict[str, float]) -> tuple[list[tuple[int, ...]], np.ndarray]:
    items = [tuple(PHONE_INDEX[p] for p in key.split()) for key in weights]
    probs = np.array(list(weights.values()), dtype=np.float64)
    return items, probs / probs.sum()


_ONSET_TABLE, _NUCLEUS_TABLE, _CODA_TABLE = _table(_ONSETS), _table(_NUCLEI), _table(_CODAS)


def _choose(rng: np.random.Generator, table: tuple[list[tuple[int, ...]], np.ndarray]) -> tuple:
    items, probs = table
    return items[int(rng.choice(len(items), p=probs))]


@dataclass(frozen=True)
class _Syllable:
    """A syllable of a lexical word: phone indices of its parts and its prosodic marks."""

    onset: tuple[int, ...]
    nucleus: int
    coda: tuple[int, ...]
    stressed: bool
    reduced: bool


Word = tuple[WordPhone, ...]
# A substitution falls on a medial segment (a phone of the word on each side) this many times as
# often as on the first or last one: medial contrasts recur in a fixed context ("b_t": "bit",
# "bat", "but"), the minimal pairs that within-context ABX is made of.
MEDIAL_WEIGHT = 10.0
ZIPF_OFFSET = 2.7  # Mandelbrot's rank offset: p(rank) ~ 1 / (rank + 2.7), as fitted to English


def _random_syllables(rng: np.random.Generator) -> tuple[_Syllable, ...]:
    n_syll = int(rng.choice([1, 2, 3], p=[0.45, 0.4, 0.15]))
    stress = 0 if n_syll == 1 or rng.random() < 0.7 else int(rng.integers(n_syll))
    syllables = []
    for s in range(n_syll):
        onset = () if rng.random() < 0.15 else _choose(rng, _ONSET_TABLE)
        nucleus = _choose(rng, _NUCLEUS_TABLE)[0]
        last = s == n_syll - 1
        coda: tuple[int, ...] = ()
        if rng.random() >= (0.35 if last else 0.6):
            coda = _choose(rng, _CODA_TABLE)
            if not last:
                coda = coda[:1]  # word-medial codas are single consonants
        reduced = s != stress and rng.random() < 0.6
        syllables.append(_Syllable(onset, nucleus, coda, s == stress, reduced))
    return tuple(syllables)


def _flatten(syllables: tuple[_Syllable, ...]) -> Word:
    phones: list[WordPhone] = []
    for syl in syllables:
        onset = syl.onset
        if phones and onset and phones[-1].phone == onset[0]:
            onset = onset[1:]  # no geminates across syllables
        phones += [WordPhone(p, False, False) for p in onset]
        phones.append(WordPhone(syl.nucleus, syl.stressed, syl.reduced))
        phones += [WordPhone(p, False, False) for p in syl.coda]
    return tuple(phones)


def _substitutes(
    part: tuple[int, ...], k: int, table: tuple[list[tuple[int, ...]], np.ndarray]
) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """Entries of a phonotactic table that differ from ``part`` in position ``k`` only."""
    items, probs = table
    keep = [i for i, item in enumerate(items) if len(item) == len(part) and item[k] != part[k]
            and item[:k] + item[k + 1:] == part[:k] + part[k + 1:]]
    return [items[i] for i in keep], probs[keep]


def _neighbour(
    rng: np.random.Generator, syllables: tuple[_Syllable, ...]
) -> tuple[_Syllable, ...] | None:
    """A phonological neighbour: one segment replaced within the phonotactics, same prosody.

    Medial segments are :data:`MEDIAL_WEIGHT` times as likely to change as the first and last
    ones. Returns ``None`` when the drawn segment has no legal substitute.
    """
    slots = []  # (syllable, part, position, weight)
    n = sum(len(s.onset) + 1 + len(s.coda) for s in syllables)
    at = 0
    for i, syl in enumerate(syllables):
        for part, size in (("onset", len(syl.onset)), ("nucleus", 1), ("coda", len(syl.coda))):
            for k in range(size):
                slots.append((i, part, k, MEDIAL_WEIGHT if 0 < at < n - 1 else 1.0))
                at += 1
    weights = np.array([w for *_, w in slots])
    i, part, k, _ = slots[int(rng.choice(len(slots), p=weights / weights.sum()))]
    syl = syllables[i]
    if part == "nucleus":
        old: tuple[int, ...] = (syl.nucleus,)
        table = _NUCLEUS_TABLE
    elif part == "onset":
        old, table = syl.onset, _ONSET_TABLE
    else:
        old = syl.coda
        table = _CODA_TABLE
    items, probs = _substitutes(old, k, table)
    if not items:
        return None
    new = items[int(rng.choice(len(items), p=probs / probs.sum()))]
    changed = dataclasses.replace(syl, **{part: new[0] if part == "nucleus" else new})
    return syllables[:i] + (changed,) + syllables[i + 1:]


def _zipf(n: int) -> np.ndarray:
    """``(n,)`` probabilities of ranks 1..n under Zipf-Mandelbrot's law."""
    weights = 1.0 / (np.arange(1, n + 1, dtype=np.float64) + ZIPF_OFFSET)
    return weights / weights.sum()


def _phone_counts(word: Word) -> Counter:
    return Counter(p.phone for p in word)


def _key(word: Word) -> tuple[int, ...]:
    return tuple(p.phone for p in word)


class Lexicon:
    """Random words in phonological neighbourhoods, with Zipfian frequencies.

    Words are ranked by frequency, probability ``1 / (rank + 2.7)``, and drawn rank by rank.
    A share ``1 - neighbour_share`` are fresh words whose ranks follow their number of syllables
    with some shuffling (short words are frequent: Zipf's law of abbreviation). The others are
    neighbours of a more frequent word (one segment replaced within the phonotactics, as "bit",
    "bat", "but"; medial segments favoured, see :data:`MEDIAL_WEIGHT`), the base drawn among the
    words ranked before in proportion to their frequencies, so frequent words gather the densest
    neighbourhoods, as in natural lexicons. Every phone of the inventory occurs in at least
    three words.

    Args:
        rng: the generator the words are drawn from.
        size: number of distinct words (at least 50).
        neighbour_share: probability that the next word is a neighbour of a more frequent one.

    Attributes:
        words: ``size`` words, most frequent first. probs: ``(size,)`` their probabilities.
    """

    def __init__(
        self, rng: np.random.Generator, size: int = 400, neighbour_share: float = 0.5
    ) -> None:
        if size < 50:
            raise ValueError(f"lexicon size {size} is too small; use at least 50 words")
        if not 0.0 <= neighbour_share < 1.0:
            raise ValueError(f"neighbour_share must lie in [0, 1), got {neighbour_share}")
        fresh = self._fresh_words(rng, size)
        structures: list[tuple[_Syllable, ...]] = []
        seen: set[tuple[int, ...]] = set()
        while len(structures) < size:
            if structures and rng.random() < neighbour_share:
                base = int(rng.choice(len(structures), p=_zipf(len(structures))))
                candidate = _neighbour(rng, structures[base])
            else:
                candidate = fresh.pop() if fresh else _random_syllables(rng)
            if candidate is not None and _key(_flatten(candidate)) not in seen:
                seen.add(_key(_flatten(candidate)))
                structures.append(candidate)
        self.words = [_flatten(s) for s in structures]
        self._cover_inventory(rng)
        self.probs = _zipf(len(self.words))

    @staticmethod
    def _fresh_words(rng: np.random.Generator, size: int) -> list[tuple[_Syllable, ...]]:
        """``size`` distinct random words, ordered by syllable count with some shuffling,
        longest first (they are popped from the end)."""
        words: dict[tuple[int, ...], tuple[_Syllable, ...]] = {}
        while len(words) < size:
            syllables = _random_syllables(rng)
            words.setdefault(_key(_flatten(syllables)), syllables)
        ordered = list(words.values())
        keys = np.array([len(w) for w in ordered]) + rng.normal(0.0, 1.0, len(ordered))
        return [ordered[i] for i in np.argsort(-keys, kind="stable")]

    def _cover_inventory(self, rng: np.random.Generator) -> None:
        """Replace rare words so that every non-silence phone occurs at least three times."""
        counts = Counter(p.phone for w in self.words for p in w)
        present = {_key(w) for w in self.words}
        slot = len(self.words) - 1
        for phone in range(1, len(PHONES)):
            while counts[phone] < 3:
                word = _flatten(_random_syllables(rng))
                if all(p.phone != phone for p in word) or _key(word) in present:
                    continue
                # replace the rarest words, but none that another phone's coverage needs
                while any(counts[q] - k < 3 for q, k in _phone_counts(self.words[slot]).items()):
                    slot -= 1
                    if slot < 0:
                        raise ValueError(f"a lexicon of {len(self.words)} words cannot hold "
                                         "every phone three times; use more words")
                counts.subtract(p.phone for p in self.words[slot])
                counts.update(p.phone for p in word)
                present.add(_key(word))
                self.words[slot] = word
                slot -= 1

    def sample(self, rng: np.random.Generator) -> Word:
        return self.words[int(rng.choice(len(self.words), p=self.probs))]


def _duration_hops(
    rng: np.random.Generator, phone: Phone, stressed: bool, reduced: bool, rate: float
) -> int:
    ms = phone.duration_ms / rate * float(np.exp(rng.normal(0.0, 0.25)))
    if phone.is_vowel:
        ms *= 1.3 if stressed else (0.6 if reduced else 0.85)
    floor = 30.0 if phone.kind in ("stop", "affricate") else 20.0
    return max(int(round(max(ms, floor) / 1000.0 / HOP_SECONDS)), 3)


def _silence_hops(rng: np.random.Generator, median_ms: float) -> int:
    ms = median_ms * float(np.exp(rng.normal(0.0, 0.4)))
    return max(int(round(ms / 1000.0 / HOP_SECONDS)), 8)


FINAL_LENGTHENING = 1.4  # phrase-final syllables are longer


def plan_utterance(
    lexicon: Lexicon,
    rng: np.random.Generator,
    target_seconds: float,
    max_seconds: float,
    rate: float,
    pause_probability: float = 0.15,
) -> list[Token]:
    """Timed tokens of an utterance: silence, words with pauses between them, silence.

    Words are added until the utterance reaches ``target_seconds`` (at least one word); a word
    that would push it past ``max_seconds`` ends the utterance instead. The last syllable before
    a pause or the end is lengthened. The total number of hops is even, so the audio is a whole
    number of 10 ms label frames.
    """
    max_hops = int(max_seconds / HOP_SECONDS)
    lead, tail = _silence_hops(rng, 220.0), _silence_hops(rng, 220.0)
    words: list[tuple[tuple[WordPhone, ...], list[int], int]] = []  # word, hops, pause after
    while not words or _length(words, lead + tail) * HOP_SECONDS < target_seconds:
        word = lexicon.sample(rng)
        hops = [_duration_hops(rng, INVENTORY[p.phone], p.stressed, p.reduced, rate) for p in word]
        pause = _silence_hops(rng, 250.0) if rng.random() < pause_probability else 0
        if words and _length([*words, (word, hops, pause)], lead + tail) > max_hops:
            break
        words.append((word, hops, pause))

    tokens = [Token(SILENCE, 0, lead)]
    start = lead
    for i, (word, hops, pause) in enumerate(words):
        final = pause > 0 or i == len(words) - 1
        vowels = _vowel_positions(word)
        for j, (wp, h) in enumerate(zip(word, hops)):
            in_final_syllable = final and j >= vowels[-1]
            if in_final_syllable:
                h = _lengthen(h)
            tokens.append(Token(wp.phone, start, start + h, wp.stressed, wp.reduced,
                                in_final_syllable))
            start += h
        if pause and i < len(words) - 1:
            tokens.append(Token(SILENCE, start, start + pause))
            start += pause
    tail += (start + tail) % 2
    tokens.append(Token(SILENCE, start, start + tail))
    return tokens


def _vowel_positions(word: tuple[WordPhone, ...]) -> list[int]:
    return [j for j, p in enumerate(word) if INVENTORY[p.phone].is_vowel]


def _lengthen(hops: int) -> int:
    return int(round(hops * FINAL_LENGTHENING))


def _length(words: list[tuple[tuple[WordPhone, ...], list[int], int]], silence: int) -> int:
    """Hops of an utterance made of ``words`` (the last pause dropped) and ``silence``."""
    total = silence
    for i, (word, hops, pause) in enumerate(words):
        last = i == len(words) - 1
        total += sum(hops) + (0 if last else pause)
        if pause or last:
            total += sum(_lengthen(h) - h for h in hops[_vowel_positions(word)[-1]:])
    return total + 1  # room for the rounding to an even count
