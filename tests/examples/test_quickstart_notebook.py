"""examples/quickstart.ipynb runs from top to bottom, within its time budget, with sane figures.

The notebook is committed without outputs; this executes a copy with nbclient in a temporary
working directory and reads the summary line its last cell prints.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "examples" / "quickstart.ipynb"
CELL_TIMEOUT_S = 240
# About 90 s on two CPU cores shared with other jobs; the budget leaves room for a slow machine
# while still catching a notebook that grew by an order of magnitude.
BUDGET_S = 360


def test_the_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    assert all(not cell.outputs and cell.execution_count is None for cell in code)


def _summary(notebook) -> dict:
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            for line in output.get("text", "").splitlines():
                if line.startswith("QUICKSTART_SUMMARY "):
                    return json.loads(line.removeprefix("QUICKSTART_SUMMARY "))
    raise AssertionError("the notebook printed no QUICKSTART_SUMMARY line")


@pytest.mark.slow
def test_quickstart_notebook_runs_and_the_learned_probe_beats_log_mel(tmp_path, monkeypatch):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("SSL_SPEECH_QUICKSTART_DIR", str(tmp_path))
    # The kernel imports this checkout's package, as the test suite does.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    start = time.monotonic()
    client.execute()
    elapsed = time.monotonic() - start
    assert elapsed < BUDGET_S, f"the quickstart took {elapsed:.0f} s (budget {BUDGET_S} s)"

    summary = _summary(notebook)
    assert summary["steps"] == 60
    probe = summary["probe"]
    assert set(probe) == {"encoder", "context.0", "log-mel"}
    assert all(0 < accuracy < 100 for accuracy in probe.values())
    learned = probe[summary["best_layer"]]
    assert learned > probe["log-mel"], probe
    for name, errors in summary["abx"].items():
        assert set(errors) == {"within", "across"}, name
        assert all(math.isfinite(e) and 0 <= e <= 100 for e in errors.values()), summary["abx"]
    assert summary["identical_after_export"] is True
    assert (tmp_path / "layer_probe.png").stat().st_size > 1000
    assert {p.name for p in (tmp_path / "exported").iterdir()} == {"config.json",
                                                                   "model.safetensors"}
