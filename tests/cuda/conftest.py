"""The device under test and full-precision float32 products for exact comparisons."""

from __future__ import annotations

import pytest
import torch
from device_runs import device_under_test


@pytest.fixture
def device() -> torch.device:
    """``$SSL_SPEECH_TEST_DEVICE`` (default ``cuda``); the test is skipped without CUDA."""
    return device_under_test()


@pytest.fixture
def no_tf32():
    """float32 products in full float32 for the test (restored after).

    CUDA runs convolutions in TF32 by default on Ampere and later (10 mantissa bits), which
    would hide a real difference from the CPU behind a 1e-3 tolerance. TF32 is a precision
    choice of the user, like bf16; the float32 comparisons are made without it.
    """
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
