"""Shared fixtures: a tiny embedded corpus generated once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Keep every test off the user's cache and at a predictable thread count.
os.environ.setdefault("SSL_SPEECH_CACHE", str(Path(os.environ.get("TMPDIR", "/tmp")) /
                                              f"ssl_speech_test_cache_{os.getpid()}"))
torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_configure(config) -> None:
    # Also declared in pyproject.toml; registered here so the marker is known in any checkout.
    config.addinivalue_line(
        "markers", "cuda: runs on the device of $SSL_SPEECH_TEST_DEVICE (default cuda; skipped "
        "without a GPU); select with -m cuda")


TINY_SPEC = dict(seed=0, hours=0.03, num_speakers=6, num_heldout_speakers=2)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A small embedded corpus (about 2 minutes of audio), generated once per session."""
    from ssl_speech.data.synthetic import SyntheticCorpusSpec, ensure_corpus

    cache = tmp_path_factory.mktemp("cache")
    return ensure_corpus(SyntheticCorpusSpec(**TINY_SPEC), cache_dir=cache, progress=False)
