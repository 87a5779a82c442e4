"""Frame labels and evaluation items: phone alignments, phone lists, ABX item files.

Formats:

- Alignments, CPC_audio's text format: one line per utterance, ``utt_id l0 l1 ...``, one
  integer phone index per 10 ms frame (frame ``i`` covers samples ``[160 i, 160 i + 160)`` at
  16 kHz).
- Phone list: one phone per line, its index the line's position; Kaldi's ``phone index`` (or
  ``index phone``) two-column form is accepted too.
- ABX items (Libri-light / ZeroSpeech): header ``#file onset offset #phone prev-phone
  next-phone speaker``, then one token per line; onset and offset in seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ssl_speech.data.corpus import Corpus

IGNORE_INDEX = -100  # label of frames with no alignment (torch cross_entropy's ignore_index)
HOP = 160  # samples per 10 ms label frame at 16 kHz


class LabelError(ValueError):
    """A label or item file that cannot be parsed; the message gives the file and line."""


def _lines(path: str | Path, what: str) -> tuple[Path, list[str]]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    return path, path.read_text().splitlines()


def read_alignments(path: str | Path) -> dict[str, np.ndarray]:
    """Frame labels per utterance from a CPC_audio alignment file.

    Returns:
        ``{utt_id: (num_frames,) int64}``, one label per 10 ms frame.

    Raises:
        LabelError: a line without labels, a non-integer label or an id given twice.
    """
    path, lines = _lines(path, "alignment")
    out: dict[str, np.ndarray] = {}
    for number, line in enumerate(lines, start=1):
        utt, _, rest = line.strip().partition(" ")
        if not utt:
            continue
        where = f"{path}, line {number}"
        if utt in out:
            raise LabelError(f"{where}: utterance {utt!r} is aligned twice; keep one line")
        try:
            labels = np.array(rest.split(), dtype=np.int64)
        except ValueError:
            raise LabelError(f"{where}: labels of {utt!r} are not all integers; expected "
                             "'utt_id l0 l1 ...'") from None
        if labels.size == 0:
            raise LabelError(f"{where}: utterance {utt!r} has no labels; expected "
                             "'utt_id l0 l1 ...'")
        out[utt] = labels
    return out


def read_phone_list(path: str | Path) -> list[str]:
    """Phone names in index order (``phones[i]`` is the name of label ``i``).

    Raises:
        LabelError: a repeated name, or explicit indices that are not exactly ``0..n-1``.
    """
    path, lines = _lines(path, "phone list")
    names: list[str] = []
    indices: list[int | None] = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) == 1:
            names.append(fields[0])
            indices.append(None)
        elif len(fields) == 2 and (fields[1].isdigit() or fields[0].isdigit()):
            name, index = fields if fields[1].isdigit() else fields[::-1]
            names.append(name)
            indices.append(int(index))
        else:
            raise LabelError(f"{path}, line {number}: expected 'phone' or 'phone index', "
                             f"got {line!r}")
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise LabelError(f"{path}: phones {repeated} are listed twice")
    if all(i is None for i in indices):
        return names
    if any(i is None for i in indices) or sorted(indices) != list(range(len(names))):
        raise LabelError(f"{path}: phone indices must be 0..{len(names) - 1}, each once")
    ordered = [""] * len(names)
    for name, index in zip(names, indices):
        ordered[index] = name  # type: ignore[index]
    return ordered


class AbxItem(NamedTuple):
    """One ABX token: phone ``phone`` between ``prev`` and ``next`` in ``file``.

    Attributes:
        file: utterance id.
        onset, offset: token boundaries in seconds.
        phone, prev, next: the phone and its context.
        speaker: speaker name.
    """

    file: str
    onset: float
    offset: float
    phone: str
    prev: str
    next: str
    speaker: str


def as_abx_item(fields: Sequence, where: str) -> AbxItem:
    """An :class:`AbxItem` from 7 fields ``file onset offset phone prev next speaker``.

    Raises:
        LabelError: not 7 fields, non-numeric times or ``onset >= offset`` (``where`` names
            the file and line, or the item).
    """
    if len(fields) != 7:
        raise LabelError(f"{where}: expected 7 fields 'file onset offset phone prev next "
                         f"speaker', got {len(fields)}: {list(fields)}")
    file, onset, offset, phone, prev, nxt, speaker = fields
    try:
        onset, offset = float(onset), float(offset)
    except (TypeError, ValueError):
        raise LabelError(f"{where}: onset/offset {onset!r}, {offset!r} are not numbers "
                         "(seconds)") from None
    if not 0 <= onset < offset:
        raise LabelError(f"{where}: need 0 <= onset < offset, got {onset} and {offset}")
    return AbxItem(str(file), onset, offset, str(phone), str(prev), str(nxt), str(speaker))


def read_abx_items(path: str | Path) -> list[AbxItem]:
    """Tokens of an ABX item file; lines starting with ``#`` (the header) are ignored.

    Raises:
        LabelError: a line without 7 fields, non-numeric times or ``onset >= offset``.
    """
    path, lines = _lines(path, "ABX item")
    return [as_abx_item(line.split(), f"{path}, line {number}")
            for number, line in enumerate(lines, start=1)
            if line.split() and not line.lstrip().startswith("#")]


def slice_labels(labels: np.ndarray, start: int, num_samples: int, hop: int = HOP) -> np.ndarray:
    """The frame labels of the window ``[start, start + num_samples)`` (samples).

    Args:
        labels: ``(F,)`` frame labels of the utterance, frame ``i`` covering samples
            ``[hop i, hop i + hop)``.
        start: first sample of the window; a multiple of ``hop`` so frames stay aligned.
        num_samples: window length in samples; ``num_samples // hop`` frames are returned.

    Returns:
        ``(num_samples // hop,)`` int64, :data:`IGNORE_INDEX` (-100) past the alignment's end.
    """
    if hop <= 0:
        raise ValueError(f"hop={hop}: must be a positive number of samples per frame")
    if start < 0 or start % hop:
        raise ValueError(f"window start {start} is not a non-negative multiple of hop {hop}; "
                         "draw window offsets on the label frame grid")
    if num_samples < 0:
        raise ValueError(f"num_samples={num_samples}: must be >= 0")
    first, count = start // hop, num_samples // hop
    out = np.full(count, IGNORE_INDEX, dtype=np.int64)
    part = labels[first : first + count]
    out[: len(part)] = part
    return out


def check_alignment_coverage(
    alignments: Mapping[str, np.ndarray],
    corpus: Corpus,
    hop: int = HOP,
    tolerance_frames: int = 1,
) -> list[str]:
    """Ids of aligned corpus utterances whose label count is off from the audio length.

    An utterance of ``L`` samples (16 kHz) should have ``L // hop`` labels; those differing by
    more than ``tolerance_frames`` are returned in corpus order. Utterances without an alignment
    are not checked.
    """
    if hop <= 0 or tolerance_frames < 0:
        raise ValueError(f"hop={hop}, tolerance_frames={tolerance_frames}: need hop > 0 and "
                         "tolerance_frames >= 0")
    return [u.id for u in corpus
            if u.id in alignments
            and abs(len(alignments[u.id]) - u.num_samples // hop) > tolerance_frames]
