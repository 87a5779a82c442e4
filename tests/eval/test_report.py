"""The report: markdown table with baseline rows, JSON figures, PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ssl_speech.eval.abx import ABXResult, ABXScore
from ssl_speech.eval.evaluation import EvalRecord
from ssl_speech.eval.phone_probe import ProbeResult
from ssl_speech.eval.report import (
    CONFUSION_PNG,
    CURVES_PNG,
    REPORT_JSON,
    REPORT_MD,
    SCORES_PNG,
    baseline_comparison,
    write_report,
)
from ssl_speech.eval.speaker_probe import SpeakerProbeResult

PHONES = ["sil", "aa", "b", "k"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def phone_result(accuracy: float) -> ProbeResult:
    confusion = np.diag([50, 30, 20, 10]) + np.ones((4, 4), dtype=np.int64)
    return ProbeResult(accuracy=accuracy, num_frames=int(confusion.sum()), num_ignored=0,
                       per_class={}, confusion=confusion, chance=0.4, train_accuracy=0.9,
                       train_frames=1000, epochs=10)


def abx_result(within: float, across: float) -> ABXResult:
    table = np.full((4, 4), np.nan)
    scores = {m: ABXScore(e, tuple(PHONES), table, groups) for m, e, groups in
              (("within", within, 12), ("across", across, 40))}
    return ABXResult(scores, 0.01, 100, 98, 2)


def record(name: str, objective: str, phone: float, within: float, across: float,
           speaker: float, run_dir: Path | None = None) -> EvalRecord:
    return EvalRecord(
        name=name, objective=objective, source=f"/somewhere/{name}",
        layer=None if objective == "baseline" else "context", frame_step=0.01,
        phone={"test": phone_result(phone), "heldout_speakers": phone_result(phone - 0.05)},
        abx={"dev": abx_result(within, across)},
        speaker=SpeakerProbeResult(speaker, 0.05, 40, 20, 1.0, 50),
        seconds={"export": 3.0, "phone_probe": 2.0, "abx": 1.5, "speaker_probe": 0.5},
        run_dir=run_dir)


def records(tmp_path: Path) -> list[EvalRecord]:
    run = tmp_path / "run_a"
    run.mkdir()
    lines = [{"step": s, "split": "train", "loss": 5.0 / s, "acc": 0.1 * s} for s in (1, 2, 3)]
    lines.append({"step": 3, "split": "val", "loss": 2.0, "acc": 0.25})
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + "{cut")
    return [record("run_a", "CPC", 0.62, 12.0, 15.0, 0.9, run_dir=run),
            record("run_b", "ACPC", 0.71, 9.5, math.nan, 0.8),
            record("log_mel", "baseline", 0.55, 20.0, 25.0, 0.95)]


def test_report_has_the_table_baseline_row_and_images(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "report"
    path = write_report(records(tmp_path), out, phones=PHONES, settings={"probe epochs": 10})
    text = path.read_text()
    assert path == out / REPORT_MD
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| model | objective | layer | phone acc (%) |")
    assert rows[1].startswith("| run_a | CPC | context | 62.00 |")
    # best model figure in bold: run_b's phone accuracy and ABX within, run_a's speaker accuracy
    assert rows[2] == ("| run_b | ACPC | context | **71.00** | **66.00** | **9.50** | — | "
                       "80.00 |")
    assert rows[3] == "| baseline: log_mel | baseline | — | 55.00 | 50.00 | 20.00 | 25.00 | 95.00 |"
    assert "probe epochs = 10" in text
    # each model against the best baseline (here the only one, log-mel at 55 %)
    assert "- `run_a` on `test`: +7.00 points against the best baseline (log_mel, 55.00 %)" in text
    assert "- `run_b` on `test`: +16.00 points" in text
    # few triplet groups are flagged, once per item file and condition
    assert text.count("ABX within speaker on `dev` rests on only 12 (A, B, X) groups") == 1
    assert "ABX across speaker on" not in text
    for name in (SCORES_PNG, CONFUSION_PNG, CURVES_PNG):
        assert f"]({name})" in text
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000
    assert "phone confusion of run_b" in text  # the best phone accuracy
    figures = json.loads((out / REPORT_JSON).read_text())
    assert figures["run_b"]["abx_across"] is None
    assert figures["log_mel"]["objective"] == "baseline"
    assert figures["run_a"]["seconds"]["export"] == 3.0


def test_report_without_plots_writes_only_the_text(tmp_path):
    out = tmp_path / "report"
    write_report(records(tmp_path)[1:], out, plots=False)
    text = (out / REPORT_MD).read_text()
    assert "| run_b |" in text and "## Time per stage" in text and ".png" not in text
    assert not list(out.glob("*.png"))
    with pytest.raises(ValueError, match="at least one record"):
        write_report([], out)


def test_models_are_compared_with_the_better_baseline(tmp_path):
    rows = [*records(tmp_path), record("mfcc", "baseline", 0.65, 20.0, 25.0, 0.95)]
    lines = baseline_comparison(rows)
    assert lines[0] == ("- `run_a` on `test`: -3.00 points against the best baseline (mfcc, "
                        "65.00 %)")
    assert lines[1].startswith("- `run_b` on `test`: +6.00 points")
    unconverged = record("run_c", "CPC", 0.7, 9.0, 9.0, 0.8)
    unconverged.phone["test"].protocol = "converged"
    assert "**not converged**" in baseline_comparison([unconverged])[-1]
