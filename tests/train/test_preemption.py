import os
import signal

from ssl_speech.train.preemption import PreemptionHandler


def test_signal_is_recorded_not_fatal_and_handlers_restored():
    before = signal.getsignal(signal.SIGUSR1)
    with PreemptionHandler() as handler:
        assert not handler.requested
        os.kill(os.getpid(), signal.SIGUSR1)
        assert handler.requested
        assert handler.received == signal.SIGUSR1
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal keeps the first
        assert handler.received == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) == before
