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


def test_pass_on_hands_the_signal_to_a_previous_python_handler():
    seen = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    try:
        with PreemptionHandler() as handler:
            assert not handler.pass_on()  # nothing received yet
            os.kill(os.getpid(), signal.SIGUSR1)
            assert seen == []
            assert handler.pass_on()
        assert seen == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_pass_on_leaves_the_default_action_alone():
    with PreemptionHandler(signals=(signal.SIGHUP,)) as handler:
        os.kill(os.getpid(), signal.SIGHUP)
        assert handler.requested
        assert not handler.pass_on()
