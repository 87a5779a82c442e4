"""Shared fixtures of the evaluation tests."""

import pytest
import torch

from ssl_speech.signal.single_thread import single_thread


@pytest.fixture
def one_torch_thread():
    """One torch CPU thread for the test (restored after).

    The probes and models here train on tiny matrices: extra intra-op threads only add
    synchronisation, which turns into long stalls when the cores are shared.
    """
    with single_thread(torch.device("cpu")):
        yield
