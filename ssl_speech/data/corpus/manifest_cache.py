"""The manifest cache: a scan's file headers kept on disk, so the next scan opens only the files
that changed.

A scan with the cache on stats every listed file (size, mtime) and reads the header only of the
files whose size or mtime differ from the cache entry, or that have none; it then rewrites the
entry atomically when anything changed. Files added since are opened, files removed are
dropped, so the corpus is always the one a fresh scan would give. One entry per (root, scan
options), stored as a manifest TSV with stamp columns (:mod:`~ssl_speech.data.corpus.manifest`)
under ``<cache>/manifests/`` (``$SSL_SPEECH_CACHE`` or ``~/.cache/ssl_speech``).

Trust rests on size and mtime, as ``make`` and ``git`` do: a file rewritten with the same size
inside one mtime tick (nanoseconds on ext4/xfs, 2 s on FAT) is not seen as changed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from ssl_speech.data.corpus.discovery import ListedFile
from ssl_speech.data.corpus.manifest import (
    ManifestRow,
    format_manifest,
    manifest_lines,
    parse_manifest_line,
)
from ssl_speech.data.corpus.utterances import CorpusError, FileStamp
from ssl_speech.data.disk_cache import cache_root, write_atomically


def cache_path(root: Path, options: Mapping[str, Any], cache_dir: str | Path | None = None
               ) -> Path:
    """Where the cache entry of scanning ``root`` with ``options`` lives."""
    root = root.resolve()
    key = json.dumps({"root": str(root), **options}, sort_keys=True, default=str)
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", root.name) or "root"
    return cache_root(cache_dir) / "manifests" / f"{name}-{digest}.tsv"


def read_cache(path: Path, root: Path) -> dict[str, FileStamp]:
    """``{relative path: stamp}`` of the entry at ``path``; empty when it is missing, unreadable,
    of another root or without stamps (the scan then opens every file and rewrites it)."""
    try:
        cached_root, lines = manifest_lines(path)
        if cached_root.resolve() != root.resolve():
            return {}
        stamps = {}
        for number, line in enumerate(lines, start=2):
            row = parse_manifest_line(line, path, number)
            if row.stamp is None:
                return {}
            stamps[row.rel] = row.stamp
        return stamps
    except (OSError, CorpusError, UnicodeDecodeError):
        return {}


def write_cache(path: Path, root: Path, listed: Sequence[ListedFile],
                stamps: Mapping[str, FileStamp], previous: Mapping[str, FileStamp],
                probed: Collection[str]) -> bool:
    """Write the entry for this scan; return whether the file changed.

    ``stamps`` are the usable headers of this scan; ``probed`` the relative paths it judged.
    Listed files it did not judge (outside the split) keep their ``previous`` stamps; files no
    longer listed, and files that failed, are left out.
    """
    rows = []
    for f in listed:
        if f.speaker is None:
            continue
        stamp = stamps.get(f.rel)
        if stamp is None and f.rel not in probed:
            stamp = previous.get(f.rel)
        if stamp is not None:
            rows.append(ManifestRow(f.rel, stamp.num_samples, f.speaker, stamp))
    text = format_manifest(root.resolve(), rows)
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    write_atomically(path, text)
    return True
