"""Split lists: the utterance ids of a split, one per line, by file or by name."""

from __future__ import annotations

from pathlib import Path

from ssl_speech.data.corpus.utterances import CorpusError


def read_split(path: str | Path) -> list[str]:
    """Utterance ids of a split list: one per line (first field); blank and ``#`` lines skipped.

    Raises:
        FileNotFoundError: no such file.
        CorpusError: an id occurs twice (the line numbers are given).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"split list {path} does not exist")
    ids: list[str] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if fields[0] in first_line:
            raise CorpusError(f"{path}, line {number}: id {fields[0]!r} already on line "
                              f"{first_line[fields[0]]}; remove the duplicate")
        first_line[fields[0]] = number
        ids.append(fields[0])
    return ids


def resolve_split(split: str | Path, root: Path | None) -> Path:
    """A split file: ``split`` itself if it is an existing file or looks like a path, else the
    named split ``root/splits/<split>.txt``."""
    candidate = Path(split).expanduser()
    if candidate.is_file() or candidate.suffix or len(candidate.parts) > 1 or root is None:
        return candidate
    named = root / "splits" / f"{split}.txt"
    if not named.is_file():
        available = sorted(p.stem for p in (root / "splits").glob("*.txt"))
        raise FileNotFoundError(f"split {split!r}: {named} does not exist; available named "
                                f"splits under {root / 'splits'}: {available or 'none'}")
    return named
