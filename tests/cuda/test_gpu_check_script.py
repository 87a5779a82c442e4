"""``scripts/gpu_check.sh --dry-run``: every stage of the GPU check on the CPU at tiny sizes,
with its records (stages, benchmark rows, summary) in one folder."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def passed_tests(junit: Path) -> int:
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    return counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]


@pytest.mark.slow
def test_dry_run_runs_every_stage_and_records_it(tmp_path):
    out = tmp_path / "check"
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--python", sys.executable,
                           "--out", str(out)], capture_output=True, text=True, timeout=600,
                          cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    stages = [json.loads(line) for line in (out / "stages.jsonl").read_text().splitlines()]
    assert [s["stage"] for s in stages] == ["tests", "ddp", "bench-bf16", "bench-32"]
    assert all(s["result"] == "ok" and s["budget"] > 0 for s in stages), stages
    # The test bodies really ran (on the CPU), not only their skips.
    assert passed_tests(out / "tests.xml") >= 6
    assert passed_tests(out / "ddp.xml") == 1

    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["kind"] == "step"]
    assert [(r["case"], r["precision"]) for r in steps] == [("default", "bf16"),
                                                           ("cpc_audio", "32")]
    for r in steps:
        assert r["device"] == "cpu" and r["cpu_model"] and r["gpu"] is None
        # The batch search doubled from 2 to its bound of 4, and the step ran at it.
        assert [t["batch_size"] for t in r["batch_search"]] == [2, 4]
        assert r["batch_size"] == 4 and r["sequences_per_s"] > 0
        assert r["fraction_of_matmul"] > 0
    assert {r["kind"] for r in rows} == {"step", "matmul"}

    summary = (out / "summary.md").read_text()
    assert "- tests: ok" in summary and "- bench-bf16: ok" in summary
    assert summary.count("| case | objective |") == 2
    assert "bench-*-compiled: not run (dry run)" in summary
    assert json.loads((out / "machine.json").read_text())["torch"]


def test_a_python_without_torch_is_refused_with_the_reason(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), "--python", "/bin/false", "--out",
                           str(tmp_path / "check")], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 1
    assert "/bin/false cannot import torch" in done.stderr
