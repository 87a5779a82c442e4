"""Wording shared by the evaluation's error messages."""

from __future__ import annotations

from collections.abc import Sequence

SHOWN = 5  # ids quoted in an error message


def quote_ids(ids: Sequence[str], shown: int = SHOWN) -> str:
    """The first ``shown`` ids, quoted, and how many more: ``'a', 'b', ... (3 more)``."""
    text = ", ".join(repr(u) for u in ids[:shown])
    return text + (f", ... ({len(ids) - shown} more)" if len(ids) > shown else "")
