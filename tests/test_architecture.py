"""The import contract (docs/architecture.md): imports run one way, from the ground up."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.is_file(), reason="import-linter is a dev dependency")


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache", "--config", str(cwd / "pyproject.toml")],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_package_keeps_the_contract():
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_a_wrong_way_import_breaks_the_contract(tmp_path):
    shutil.copytree(REPO / "ssl_speech", tmp_path / "ssl_speech",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    audio = tmp_path / "ssl_speech" / "data" / "audio.py"
    audio.write_text(audio.read_text() + "\nfrom ssl_speech.train import trainer  # noqa\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "ssl_speech.data.audio -> ssl_speech.train.trainer" in result.stdout
