"""The scale benchmark's rows: appended to ``scale.jsonl`` as they are measured and tabled in
``scale.md``, one Markdown table per stage."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

COLUMNS = {
    "scan": ("scan", "files", "repeats", "tree_mb", "seconds", "files_per_s", "speedup",
             "train-clean-100_s", "960h_s"),
    "step": ("step_ms", "step_source", "step_windows_per_s", "batch_size", "threads"),
    "pipeline": ("workers", "windows", "windows_per_s", "step_windows_per_s", "ratio", "held",
                 "train-clean-100_loader_epoch_s", "960h_loader_epoch_s"),
    "probe": ("release_mb", "scale", "utterances", "frames", "store_mb", "epochs_run", "fit_s",
              "frames_per_s", "peak_rss_mb", "rss_vs_first", "peak_anon_mb", "peak_file_mb",
              "validation_accuracy",
              "train-clean-100_epoch_s"),
    "probe_flat": ("frames_growth", "rss_growth", "target", "held"),
    "abx": ("items", "copied_speakers", "tokens", "groups_within", "groups_across", "abx_s",
            "peak_rss_mb", "peak_anon_mb", "within", "across"),
    "abx_growth": ("time_exponent", "mb_per_1000_items", "dev_clean_items_estimate",
                   "dev_clean_s_estimate", "dev_clean_peak_mb_estimate"),
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "" if value is None else str(value)


def markdown_report(rows: list[dict[str, Any]]) -> str:
    """The rows as one Markdown table per stage (a row's missing fields stay blank)."""
    lines = []
    for row in rows:
        if row["stage"] == "run":
            lines += [f"Scale benchmark, {row['date']}, commit {row['commit']}, "
                      f"{row['cpu_model']} ({row['cpu_count']} cores), load "
                      f"{_fmt(row['load_average_1min'])}; sizes: {json.dumps(row['sizes'])}", ""]
    for stage, columns in COLUMNS.items():
        chosen = [r for r in rows if r["stage"] == stage]
        if not chosen:
            continue
        lines += [f"### {stage}", "", "| " + " | ".join(columns) + " |",
                  "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in chosen]
        lines.append("")
    return "\n".join(lines)


class Recorder:
    """Rows of the run: appended to ``scale.jsonl`` as measured, tabled in ``scale.md``."""

    def __init__(self, out: Path, header: dict[str, Any], log: Callable[[str], None]) -> None:
        self.jsonl, self.markdown, self.log = out / "scale.jsonl", out / "scale.md", log
        self.rows: list[dict[str, Any]] = []
        self.jsonl.write_text("")
        self.add({"stage": "run", **header})

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with open(self.jsonl, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        self.markdown.write_text(markdown_report(self.rows))
        self.log(f"{row['stage']}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in row.items()
                                                 if k != "stage" and not isinstance(v, dict)))
