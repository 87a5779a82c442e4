"""Run a function in a fresh process and measure its peak memory (``VmHWM``), with its heap
(``RssAnon``) and file-backed (``RssFile``) parts sampled apart; for the scale benchmark."""

from __future__ import annotations

import multiprocessing as mp
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _status_kb(fields: tuple[str, ...]) -> dict[str, int]:
    """Fields of ``/proc/self/status`` (``VmHWM``, ``RssAnon``, ...) in kB."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name = line.split(":", 1)[0]
        if name in fields:
            found[name] = int(line.split()[1])
    if len(found) != len(fields):
        raise RuntimeError(f"/proc/self/status lacks {sorted(set(fields) - set(found))}: "
                           "peak memory needs Linux")
    return found


def _peak_rss_bytes() -> int:
    """This process's resident-memory high-water mark (``VmHWM``), in bytes."""
    return _status_kb(("VmHWM",))["VmHWM"] * 1024


class _RssSampler:
    """Samples anonymous and file-backed resident memory every ``period`` seconds (the kernel
    keeps a high-water mark of their sum only): their peaks tell heap from mapped files."""

    def __init__(self, period: float = 0.02) -> None:

        self.peaks = {"RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period,), daemon=True)
        self._thread.start()

    def _run(self, period: float) -> None:
        while True:
            self.sample()
            if self._stop.wait(period):
                return

    def sample(self) -> None:
        for name, kb in _status_kb(tuple(self.peaks)).items():
            self.peaks[name] = max(self.peaks[name], kb)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        self.sample()
        return {"peak_anon_mb": self.peaks["RssAnon"] / 1024,
                "peak_file_mb": self.peaks["RssFile"] / 1024}


def _child(conn, fn: Callable[..., Any], args: tuple) -> None:
    try:
        sampler = _RssSampler()
        result = fn(*args)
        if isinstance(result, dict):
            result = {**result, **sampler.stop()}
        conn.send(("ok", result, _peak_rss_bytes()))
    except BaseException as error:  # reported to the parent, which raises it
        conn.send(("error", f"{type(error).__name__}: {error}", 0))
    finally:
        conn.close()


def run_measured(fn: Callable[..., Any], *args: Any) -> tuple[Any, int]:
    """Run ``fn(*args)`` in a fresh (spawned) process; return its result and the process's peak
    resident memory in bytes (``VmHWM``: everything it touched, libraries and file pages
    included). ``fn`` must be importable by name (module level)."""
    context = mp.get_context("spawn")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(child, fn, args))
    process.start()
    child.close()
    try:
        status, result, peak = parent.recv()
    except EOFError:
        process.join()
        raise RuntimeError(f"the measured process of {fn.__name__} died (exit code "
                           f"{process.exitcode}); out of memory?") from None
    process.join()
    if status != "ok":
        raise RuntimeError(f"{fn.__name__} failed in its measured process: {result}")
    return result, peak


# ------------------------------------------------------------------ inputs built on disk
