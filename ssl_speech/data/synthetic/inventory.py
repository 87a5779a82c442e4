"""The phone inventory of the embedded corpus: 40 classes with articulatory targets as data.

Index 0 is silence, ``sil``; then 10 monophthongs, 5 diphthongs, 3 nasals, 9 fricatives (``hh``
included), 6 stops, 2 affricates and 4 approximants. Each phone carries formant targets F1-F3
in Hz for an adult male vocal tract (monophthongs from Peterson & Barney, 1952; diphthongs move
between two targets), and, for consonants, a place of articulation whose F2/F3 locus (Delattre
et al., 1955) drives the formant transitions into neighbouring vowels, whose noise spectrum
shapes frication and stop bursts, and whose antiformant shapes nasal murmur.
"""

from __future__ import annotations

from dataclasses import dataclass

# Formant targets of a neutral (reduced) vowel, Hz; unstressed vowels move toward it.
SCHWA = (500.0, 1500.0, 2500.0)


@dataclass(frozen=True)
class Place:
    """Place of articulation.

    Attributes:
        noise: spectral peaks of frication and bursts, ``(centre Hz, bandwidth Hz, gain dB)``.
        nasal_zero: antiformant frequency of the nasal made at this place, Hz.
    """

    noise: tuple[tuple[float, float, float], ...]
    nasal_zero: float


PLACES: dict[str, Place] = {
    "labial": Place(((1200.0, 2500.0, 0.0),), 1000.0),
    "labiodental": Place(((3800.0, 5000.0, 0.0), (7000.0, 3000.0, -3.0)), 0.0),
    "dental": Place(((5500.0, 4000.0, 0.0), (2500.0, 1500.0, -8.0)), 0.0),
    "alveolar": Place(((5300.0, 1800.0, 0.0), (7200.0, 1500.0, -4.0)), 1600.0),
    "postalveolar": Place(((2700.0, 900.0, 0.0), (4600.0, 1800.0, -5.0)), 0.0),
    "palatal": Place(((3200.0, 1200.0, 0.0),), 0.0),
    # velar bursts: a compact peak at the vowel-dependent F2 locus (centre 0 here)
    "velar": Place(((0.0, 700.0, 0.0), (4000.0, 3000.0, -12.0)), 2800.0),
    "glottal": Place(((3000.0, 6000.0, 0.0),), 0.0),
    "none": Place(((3000.0, 6000.0, 0.0),), 0.0),
}


@dataclass(frozen=True)
class Phone:
    """One phone class.

    Attributes:
        name: the label written to ``phones.txt``.
        kind: ``silence | vowel | diphthong | nasal | fricative | aspirate | stop | affricate |
            approximant``.
        place: a key of :data:`PLACES`.
        voiced: whether the glottis vibrates during the phone (voice bar for voiced stops).
        formants: F1-F3 targets in Hz (male reference); for consonants F1 is the constricted
            tract's value and F2/F3 the place's locus (velars take theirs from the vowel).
        offglide: second F1-F3 target of a diphthong, else ``None``.
        duration_ms: median duration at normal rate in a stressed syllable.
        level_db: level of the phone's main source relative to a stressed vowel's voicing.
    """

    name: str
    kind: str
    place: str
    voiced: bool
    formants: tuple[float, float, float]
    offglide: tuple[float, float, float] | None
    duration_ms: float
    level_db: float

    @property
    def is_vowel(self) -> bool:
        return self.kind in ("vowel", "diphthong")


_O = None  # no offglide
# name   kind          place          voiced  F1    F2    F3     offglide F1-F3        ms   dB
_TABLE = [
    ("sil", "silence", "none", False, (500, 1500, 2500), _O, 200, -99),
    ("iy", "vowel", "none", True, (270, 2290, 3010), _O, 95, -1),
    ("ih", "vowel", "none", True, (390, 1990, 2550), _O, 70, 0),
    ("eh", "vowel", "none", True, (530, 1840, 2480), _O, 80, 0),
    ("ae", "vowel", "none", True, (660, 1720, 2410), _O, 115, 1),
    ("aa", "vowel", "none", True, (730, 1090, 2440), _O, 110, 1),
    ("ah", "vowel", "none", True, (520, 1190, 2390), _O, 65, 0),
    ("ao", "vowel", "none", True, (570, 840, 2410), _O, 110, 1),
    ("uh", "vowel", "none", True, (440, 1020, 2240), _O, 65, -1),
    ("uw", "vowel", "none", True, (300, 870, 2240), _O, 95, -2),
    ("er", "vowel", "none", True, (490, 1350, 1690), _O, 100, -1),
    ("ey", "diphthong", "none", True, (500, 1850, 2500), (330, 2200, 2800), 135, 0),
    ("ay", "diphthong", "none", True, (750, 1250, 2500), (420, 2000, 2600), 150, 1),
    ("oy", "diphthong", "none", True, (560, 880, 2450), (420, 1900, 2550), 155, 0),
    ("aw", "diphthong", "none", True, (760, 1300, 2500), (480, 1000, 2350), 150, 1),
    ("ow", "diphthong", "none", True, (540, 1000, 2400), (390, 860, 2300), 130, 0),
    ("m", "nasal", "labial", True, (280, 900, 2200), _O, 65, -8),
    ("n", "nasal", "alveolar", True, (280, 1750, 2700), _O, 60, -8),
    ("ng", "nasal", "velar", True, (280, 2000, 2600), _O, 70, -9),
    ("f", "fricative", "labiodental", False, (300, 1100, 2300), _O, 95, -24),
    ("th", "fricative", "dental", False, (300, 1450, 2600), _O, 85, -26),
    ("s", "fricative", "alveolar", False, (300, 1750, 2700), _O, 105, -14),
    ("sh", "fricative", "postalveolar", False, (300, 2000, 2550), _O, 110, -12),
    ("hh", "aspirate", "glottal", False, (500, 1500, 2500), _O, 65, -12),
    ("v", "fricative", "labiodental", True, (300, 1100, 2300), _O, 60, -30),
    ("dh", "fricative", "dental", True, (300, 1450, 2600), _O, 45, -32),
    ("z", "fricative", "alveolar", True, (300, 1750, 2700), _O, 80, -20),
    ("zh", "fricative", "postalveolar", True, (300, 2000, 2550), _O, 75, -18),
    ("p", "stop", "labial", False, (250, 900, 2200), _O, 90, -14),
    ("t", "stop", "alveolar", False, (250, 1750, 2700), _O, 80, -10),
    ("k", "stop", "velar", False, (250, 2000, 2600), _O, 90, -10),
    ("b", "stop", "labial", True, (250, 900, 2200), _O, 70, -18),
    ("d", "stop", "alveolar", True, (250, 1750, 2700), _O, 60, -14),
    ("g", "stop", "velar", True, (250, 2000, 2600), _O, 70, -14),
    ("ch", "affricate", "postalveolar", False, (300, 2000, 2550), _O, 115, -11),
    ("jh", "affricate", "postalveolar", True, (300, 2000, 2550), _O, 95, -17),
    ("l", "approximant", "alveolar", True, (360, 1050, 2800), _O, 60, -4),
    ("r", "approximant", "postalveolar", True, (350, 1150, 1550), _O, 60, -4),
    ("w", "approximant", "labial", True, (300, 650, 2200), _O, 55, -5),
    ("y", "approximant", "palatal", True, (270, 2200, 2950), _O, 50, -5),
]

INVENTORY: list[Phone] = [
    Phone(name, kind, place, voiced, tuple(map(float, f)), None if o is None else
          tuple(map(float, o)), float(ms), float(db))
    for name, kind, place, voiced, f, o, ms, db in _TABLE
]
PHONES: list[str] = [p.name for p in INVENTORY]
PHONE_INDEX: dict[str, int] = {name: i for i, name in enumerate(PHONES)}
SILENCE = 0
