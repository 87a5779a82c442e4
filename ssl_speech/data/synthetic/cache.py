"""The embedded corpus on disk: generated into a hidden directory and renamed when whole, cached.

:func:`ensure_corpus` caches the corpus under ``~/.cache/ssl_speech`` (``$SSL_SPEECH_CACHE`` or
an argument override it) in a directory named by :func:`corpus_dirname`, which holds the
generator version. Generation writes a hidden sibling directory and renames it when complete,
under a lock file, so neither a killed generation nor two concurrent ones (two DDP ranks) leave
a half corpus that looks whole. :func:`is_complete` checks a corpus against the census of its
files that ``corpus.json`` records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ssl_speech.data.disk_cache import cache_root
from ssl_speech.data.synthetic.generate import (
    GENERATOR_VERSION,
    SyntheticCorpusSpec,
    file_census,
    write_corpus,
)

__all__ = ["corpus_dirname", "ensure_corpus", "ensure_corpus_at", "generate_corpus",
           "is_complete"]

_DEFAULT_SPEC = SyntheticCorpusSpec()  # frozen: one shared default


def generate_corpus(
    root: str | Path,
    spec: SyntheticCorpusSpec = _DEFAULT_SPEC,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Generate the corpus at ``root`` (which must not exist yet) and return ``root``.

    The files are written to a hidden sibling directory that is renamed to ``root`` once
    complete. ``workers`` processes share the utterances (default: the usable CPUs); the
    output does not depend on it. If another process completes ``root`` first, its corpus is
    kept and returned.
    """
    root = Path(root).expanduser().absolute()
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(
            f"{root} exists and is not empty; remove it or call ensure_corpus_at() to reuse it"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    partial = root.parent / f".{root.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        partial.mkdir()
        write_corpus(partial, spec, workers, progress)
        try:
            os.replace(partial, root)  # atomic; only replaces a missing or empty directory
        except OSError:
            if not is_complete(root, spec):
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return root


def is_complete(root: str | Path, spec: SyntheticCorpusSpec | None = None) -> bool:
    """Whether ``root`` holds a whole corpus (of ``spec``, if given): its ``corpus.json``
    exists and its file count and total size match the files on disk."""
    root = Path(root)
    try:
        meta = json.loads((root / "corpus.json").read_text())
        expected = (int(meta["num_files"]), int(meta["total_bytes"]))
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if spec is not None and (
        meta.get("generator_version") != GENERATOR_VERSION
        or meta.get("spec") != dataclasses.asdict(spec)
    ):
        return False
    return file_census(root) == expected


def corpus_dirname(spec: SyntheticCorpusSpec) -> str:
    """Cache directory name: version, seed and size, plus a hash of any other non-default field.

    ``SyntheticCorpusSpec()`` gives ``synthetic-v2-seed0-h1.0``.
    """
    name = f"synthetic-v{GENERATOR_VERSION}-seed{spec.seed}-h{float(spec.hours)}"
    rest = {k: v for k, v in dataclasses.asdict(spec).items() if k not in ("seed", "hours")}
    default = {k: v for k, v in dataclasses.asdict(SyntheticCorpusSpec()).items() if k in rest}
    if rest != default:
        name += "-" + hashlib.sha1(json.dumps(rest, sort_keys=True).encode()).hexdigest()[:8]
    return name


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (POSIX); elsewhere rename-wins alone protects."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(root: Path) -> None:
    """Delete an incomplete ``root`` and the leftovers of generations killed mid-way."""
    for partial in root.parent.glob(f".{root.name}.partial-*"):
        pid = partial.name.rsplit("-", 2)[-2]
        if not pid.isdigit() or not _pid_alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)
    if root.exists():
        trash = root.parent / f".{root.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.replace(root, trash)  # out of sight first, so no reader sees it half deleted
        shutil.rmtree(trash, ignore_errors=True)


def ensure_corpus_at(
    root: str | Path,
    spec: SyntheticCorpusSpec = _DEFAULT_SPEC,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Return ``root`` holding the corpus of ``spec``, generating it if missing or corrupt."""
    root = Path(root).expanduser().absolute()
    if is_complete(root, spec):
        return root
    with _locked(root.parent / f".{root.name}.lock"):
        if is_complete(root, spec):  # another process finished it while we waited
            return root
        _remove_stale(root)
        return generate_corpus(root, spec, workers=workers, progress=progress)


def ensure_corpus(
    spec: SyntheticCorpusSpec = _DEFAULT_SPEC,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """The cached corpus of ``spec``: ``<cache>/<corpus_dirname(spec)>``, generated if needed.

    The cache is ``cache_dir``, else ``$SSL_SPEECH_CACHE``, else ``~/.cache/ssl_speech``.
    """
    return ensure_corpus_at(cache_root(cache_dir) / corpus_dirname(spec), spec, workers, progress)
