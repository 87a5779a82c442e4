"""Files that fail while training reads them, after the scan passed them.

On a cluster a file can vanish, be truncated or be replaced between the corpus scan and the
moment a worker reads one of its windows (network file systems do this), and a float WAV can
hold NaN or Inf samples that no header shows. :class:`~ssl_speech.data.windows.WindowDataset`
turns each such window into a :class:`ReadFault` (``on_error="skip"``) that the batch carries in
``Batch.skipped``, or raises an :class:`~ssl_speech.data.audio.AudioError` naming the file
(``on_error="raise"``). :class:`ReadFaultLog`, in the training process, counts them and warns
once per file, however many workers and windows met it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ssl_speech.data.audio import AudioError


class ReadFaultWarning(UserWarning):
    """A file failed at read time; its windows are skipped (named once per file)."""


@dataclass(frozen=True)
class ReadFault:
    """A window that could not be read: its file and why."""

    path: str
    reason: str
    window: int  # the window length, so a batch of faults alone still has a shape


def non_finite_error(path: object, start: int, wav: np.ndarray) -> AudioError | None:
    """An error naming ``path`` when the window read from ``start`` holds NaN or Inf."""
    bad = int(np.count_nonzero(~np.isfinite(wav)))
    if bad == 0:
        return None
    return AudioError(
        f"{path}: samples [{start}, {start + len(wav)}) hold {bad} NaN or Inf values (a float "
        "file with non-finite samples); the window is skipped with data.on_error=skip, fix or "
        "remove the file")


class ReadFaultLog:
    """Counts of read faults in the batches handed to training, one warning per file.

    Attributes:
        skipped_windows: windows left out so far.
        files: ``{path: first reason}`` of every file that failed so far.
    """

    def __init__(self) -> None:
        self.skipped_windows = 0
        self.files: dict[str, str] = {}

    @property
    def skipped_files(self) -> int:
        """Distinct files that failed so far."""
        return len(self.files)

    def record(self, skipped: Iterable[tuple[str, str]]) -> None:
        """Count a batch's ``Batch.skipped`` and warn for each file not seen before."""
        for path, reason in skipped:
            self.skipped_windows += 1
            if path not in self.files:
                self.files[path] = reason
                warnings.warn(f"{reason} (windows of this file are skipped and counted; "
                              "data.on_error=raise stops instead)", ReadFaultWarning,
                              stacklevel=3)
