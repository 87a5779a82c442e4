"""Shared fixtures of the evaluation tests."""

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """One torch CPU thread for the test (restored after).

    The probes and models here train on tiny matrices: extra intra-op threads only add
    synchronisation, which turns into long stalls when the cores are shared.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
