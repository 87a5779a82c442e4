"""The tiny embedded corpus the tests of ``data/synthetic`` share, generated once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic_files import TINY

from ssl_speech.data.synthetic import generate_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_corpus(tmp_path_factory.mktemp("synthetic") / "tiny", TINY, workers=1,
                           progress=False)
