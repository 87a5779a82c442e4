"""One torch CPU thread for loops of many tiny operations (DTW, Viterbi pitch tracking)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def single_thread(device: torch.device) -> Iterator[None]:
    """Run the block with one torch CPU thread (restored after); no-op off CPU.

    For loops of many tiny operations (DTW, Viterbi), where waking other threads costs more
    than the work, above all on a busy machine.
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
