"""Catch the signals clusters send before preemption, so the trainer can save and exit cleanly.

SLURM (``--signal=USR1@120``) and most schedulers send SIGTERM, SIGUSR1 or SIGUSR2 some time
before a kill. The handler only records the request; the trainer checks it at the next step
boundary, agrees with the other ranks, writes a checkpoint and exits with
:data:`PREEMPTED_EXIT_CODE` so a wrapper script can requeue the job. A second signal while
saving is ignored. When a handler was already installed before ours (e.g. submitit's, which
requeues the job), the trainer hands the signal on to it after the checkpoint is written
(:meth:`PreemptionHandler.pass_on`).
"""

from __future__ import annotations

import contextlib
import os
import signal
from types import FrameType

# EX_TEMPFAIL from sysexits.h: "temporary failure, try again" — distinct from crashes (1) and
# from the shell's 128+N codes, so a requeue script can test for it.
PREEMPTED_EXIT_CODE = 75

# USR2 is what submitit (Hydra's SLURM launcher) asks SLURM to send.
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class PreemptionHandler:
    """Context manager that installs the handlers and restores the previous ones on exit."""

    def __init__(self, signals: tuple[signal.Signals, ...] = PREEMPTION_SIGNALS) -> None:
        self.signals = signals
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)

    @property
    def requested(self) -> bool:
        return self.received is not None

    def __enter__(self) -> PreemptionHandler:
        for sig in self.signals:
            # Outside the main thread (e.g. a notebook worker) handlers cannot be installed.
            with contextlib.suppress(ValueError):
                previous = signal.signal(sig, self._handle)
                outer = _handler_of(previous)
                if outer is not None and self.received is None:
                    # an enclosing handler (the entry point's, from start-up on) hands over a
                    # signal it caught before this one was installed
                    self.received = outer.received
                self._previous[sig] = previous
        return self

    def pass_on(self) -> bool:
        """Restore the previous handler and re-send the received signal to it, if it was a
        Python handler (not the default action). Returns whether it was passed on."""
        if self.received is None:
            return False
        previous = self._previous.get(self.received)
        outer = _handler_of(previous)
        while outer is not None:  # ours all the way out: hand on to what was there before
            previous = outer._previous.get(self.received)
            outer = _handler_of(previous)
        if not callable(previous):
            return False
        self.__exit__()
        signal.signal(self.received, previous)
        os.kill(os.getpid(), self.received)
        return True

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


def _handler_of(handler: object) -> PreemptionHandler | None:
    """The :class:`PreemptionHandler` whose method ``handler`` is, if any."""
    owner = getattr(handler, "__self__", None)
    return owner if isinstance(owner, PreemptionHandler) else None


def catch_from_start() -> PreemptionHandler:
    """Install a handler for the whole process (the entry point calls this first): a signal
    that arrives during start-up, the corpus scan or model building is kept, and the trainer's
    own handler takes it over, saves at its first step boundary and exits with
    :data:`PREEMPTED_EXIT_CODE`."""
    return PreemptionHandler().__enter__()
