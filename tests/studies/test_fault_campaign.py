"""The fault campaign's harness, and a small seeded subset of the campaign itself."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_speech.studies import fault_campaign as fc
from ssl_speech.studies import fault_harness as harness
from ssl_speech.studies.fault_injection import PLAN_ENV, SITECUSTOMIZE


def _child(tmp_path: Path, plan: dict, code: str) -> subprocess.CompletedProcess:
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hooks), os.getcwd()]))
    env[PLAN_ENV] = json.dumps(plan)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)


def test_disk_full_raises_enospc_after_the_budget(tmp_path):
    plan = {"kind": "disk_full", "target": "metrics", "after_bytes": 10}
    code = ("import errno\n"
            "f = open('metrics.jsonl', 'a')\n"
            "f.write('12345678')\n"
            "try:\n    f.write('abcdef')\nexcept OSError as e:\n    print('errno', e.errno)\n")
    result = _child(tmp_path, plan, code)
    assert f"errno {errno.ENOSPC}" in result.stdout, result.stderr
    assert (tmp_path / "metrics.jsonl").read_text() == "12345678ab"


def test_kill_in_write_stops_at_the_byte(tmp_path):
    plan = {"kind": "kill_in_write", "target": "checkpoint", "after_bytes": 5, "nth": 1}
    code = ("import torch\n"
            "torch.save({'x': torch.zeros(1000)}, 'ckpt-00000001.pt.tmp')\n"
            "print('survived')\n")
    result = _child(tmp_path, plan, code)
    assert result.returncode == -9 and "survived" not in result.stdout
    assert (tmp_path / "ckpt-00000001.pt.tmp").stat().st_size == 5


def test_other_files_are_left_alone(tmp_path):
    plan = {"kind": "disk_full", "target": "any", "after_bytes": 0}
    result = _child(tmp_path, plan, "open('notes.txt', 'w').write('x' * 100); print('ok')")
    assert result.returncode == 0 and "ok" in result.stdout


def test_unknown_kinds_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown fault kinds"):
        fc.run_campaign(tmp_path, tmp_path, ["meteor_strike"], trials=1)


def test_compare_runs_names_a_difference(tmp_path):
    import torch

    def write(run: Path, value: float) -> None:
        (run / "checkpoints").mkdir(parents=True)
        state = {"step": harness.MAX_STEPS, "model": {"w": torch.tensor([value])},
                 "objective": {}, "optimizer": {}}
        from ssl_speech.runs.checkpoint import checkpoint_path, save_checkpoint

        save_checkpoint(state, checkpoint_path(run, harness.MAX_STEPS))

    write(tmp_path / "a", 1.0)
    write(tmp_path / "b", 1.0)
    write(tmp_path / "c", 2.0)
    assert harness.compare_runs(tmp_path / "a", tmp_path / "b") is None
    assert harness.compare_runs(tmp_path / "a", tmp_path / "c") == "model state differs"


@pytest.mark.slow
def test_a_small_campaign_survives_every_fault(tmp_path, tiny_corpus):
    kinds = ["sigkill", "kill_in_checkpoint_write", "kill_in_metrics_append",
             "disk_full_checkpoint", "sigterm", "file_deleted"]
    trials = fc.run_campaign(tmp_path, tiny_corpus, kinds, trials=1, seed=3)
    rows = fc.summarise(trials)
    assert [r["kind"] for r in rows] == kinds
    failed = [(t.kind, t.detail, t.exits) for t in trials if t.outcome == "failed"]
    assert not failed
    assert all(r["files_lost"] == 0 for r in rows)
