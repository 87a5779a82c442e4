"""The library's cache directory and atomic file writes into it.

The cache (generated corpora, scan manifests) lives under ``~/.cache/ssl_speech`` unless
``$SSL_SPEECH_CACHE`` or an explicit argument says otherwise. A file enters it through
:func:`write_atomically`: written beside its destination and renamed, so a reader (another run,
another DDP rank) sees the old file or the whole new one, never a part.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$SSL_SPEECH_CACHE``, else ``~/.cache/ssl_speech`` (absolute)."""
    if cache_dir is None:
        cache_dir = os.environ.get("SSL_SPEECH_CACHE") or Path.home() / ".cache" / "ssl_speech"
    return Path(cache_dir).expanduser().absolute()


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary sibling, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.parent / f".{path.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with open(partial, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
