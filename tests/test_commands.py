"""The installed commands (``[project.scripts]`` in pyproject.toml): each one's ``--help``.

Each command is run the way its console script runs it: the entry point's function is imported
and called with no arguments and ``sys.argv = [command, "--help"]`` (all in one child
interpreter, to import torch once). The commands come from pyproject.toml, so the test needs no
reinstall; another test checks that the installed distribution's entry points are the same ones,
and that their scripts are in the interpreter's bin directory, when it was installed from this
checkout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]
EXPECTED = {"train", "evaluate", "export-features", "abx", "phone-probe", "speaker-probe",
            "compare", "benchmark", "export-model", "fault-campaign"}


def _scripts() -> dict[str, str]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return dict(tomllib.load(f)["project"]["scripts"])


SCRIPTS = _scripts()
# Calls each entry point as its console script does (no arguments, sys.argv set), all in one
# interpreter to import torch once; each command's exit status and output come back as JSON.
HELP_OF_EACH = """
import contextlib, importlib, io, json, sys
results = {}
for name, target in json.loads(sys.argv[1]).items():
    module, _, attr = target.partition(":")
    out, err = io.StringIO(), io.StringIO()
    sys.argv = [name, "--help"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = getattr(importlib.import_module(module), attr)()
        except SystemExit as stop:
            status = stop.code
    results[name] = {"status": status or 0, "stdout": out.getvalue(), "stderr": err.getvalue()}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def helps() -> dict[str, dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", HELP_OF_EACH, json.dumps(SCRIPTS)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_tool_has_a_command():
    assert {name.removeprefix("ssl-speech-") for name in SCRIPTS} == EXPECTED
    assert all(name.startswith("ssl-speech-") for name in SCRIPTS)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_command_help(helps, name):
    result = helps[name]
    assert result["status"] == 0, result["stderr"][-2000:]
    assert "Traceback" not in result["stderr"], result["stderr"]
    out = result["stdout"]
    if name == "ssl-speech-train":  # Hydra's help, with the app's header
        assert "ssl_speech.train: train a self-supervised speech model" in out
        assert "objective: " in out  # the config groups are listed
    else:
        assert out.startswith("usage: "), out[:300]
        assert "-h, --help" in out


def _installed_from_this_checkout() -> metadata.Distribution | None:
    # the checkout's own ssl_speech.egg-info (left by the editable build) may come first on
    # sys.path; the installed distribution is the one that records where it came from
    for dist in metadata.distributions(name="ssl_speech"):
        direct_url = dist.read_text("direct_url.json")
        if direct_url:
            url = json.loads(direct_url).get("url", "")
            if Path(url.removeprefix("file://")).resolve() == REPO:
                return dist
    return None


def test_installed_entry_points_match_pyproject():
    dist = _installed_from_this_checkout()
    if dist is None:
        pytest.skip("ssl_speech is not installed from this checkout")
    installed = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert installed == SCRIPTS, "reinstall (pip install -e .) after editing [project.scripts]"
    bin_dir = Path(sys.executable).parent
    for name in SCRIPTS:
        assert (bin_dir / name).is_file(), f"{name} missing from {bin_dir}"
