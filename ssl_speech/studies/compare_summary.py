"""What a comparison reports of each run: loss statistics, the table, the training curves.

Column specs and the noise measures are described in :mod:`ssl_speech.studies.compare_preset`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ssl_speech.runs.metrics_log import read_metrics
from ssl_speech.studies.compare_preset import SUMMARY_COLUMNS


def _train_series(records: list[dict[str, Any]], metric: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [(r["step"], r[metric]) for r in records
            if r.get("split") == "train" and isinstance(r.get(metric), int | float)]
    if not rows:
        return np.zeros(0), np.zeros(0)
    steps, values = zip(*rows)
    return np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)


def _tail(count: int, fraction: float) -> int:
    return max(2, math.ceil(fraction * count)) if count >= 2 else count


def loss_statistics(steps: np.ndarray, loss: np.ndarray, tail_fraction: float) -> dict[str, float]:
    """``final_loss``, ``loss_cv`` and ``loss_rel_std`` (module docstring) of one loss curve."""
    n = len(loss)
    if n == 0:
        return {"final_loss": math.nan, "loss_cv": math.nan, "loss_rel_std": math.nan}
    k = _tail(n, tail_fraction)
    x, y = steps[-k:], loss[-k:]
    final = float(y.mean())
    if k >= 3 and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        std = float(np.std(y - (slope * x + intercept), ddof=2))
    else:
        std = float(np.std(y))
    head = float(loss[:k].mean())
    drop = head - final
    return {
        "final_loss": final,
        "loss_cv": std / abs(final) if final != 0 else math.inf,
        "loss_rel_std": std / drop if drop > 0 else math.inf,
    }


def summarise_run(run_dir: Path, tail_fraction: float) -> dict[str, Any]:
    """Loss statistics and the tail mean of every logged training metric of a run."""
    records = read_metrics(run_dir)
    steps, loss = _train_series(records, "loss")
    summary: dict[str, Any] = loss_statistics(steps, loss, tail_fraction)
    names = sorted({k for r in records if r.get("split") == "train" for k in r}
                   - {"step", "split", "time", "epoch"})
    metrics = {}
    for name in names:
        _, values = _train_series(records, name)
        if len(values):
            metrics[name] = float(values[-_tail(len(values), tail_fraction):].mean())
    summary["metrics"] = metrics
    times = [r["time"] for r in records if r.get("split") == "train" and "time" in r]
    summary["logged_steps"] = len(loss)
    summary["last_step"] = int(steps[-1]) if len(steps) else 0
    summary["train_span_seconds"] = float(times[-1] - times[0]) if len(times) > 1 else 0.0
    return summary


def column_value(row: dict[str, Any], spec: str) -> Any:
    """The value of a column spec in a result row (module docstring)."""
    if spec in SUMMARY_COLUMNS:
        return row.get(spec)
    kind, key = spec.split(":", 1)
    if kind == "metric":
        return row.get("metrics", {}).get(key)
    if kind == "choice":
        return row.get("choices", {}).get(key)
    value: Any = row.get("config")
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _format(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return "–" if math.isnan(value) else "∞"
        if abs(value) >= 1000 or value == int(value) and abs(value) >= 1:
            return f"{value:.0f}"
        return f"{value:.4g}" if abs(value) >= 1e-3 else f"{value:.2e}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A Markdown table: one row per result row, one column per ``(header, spec)``."""
    lines = ["| " + " | ".join(h for h, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_format(column_value(row, s)) for _, s in columns) + " |")
    return "\n".join(lines) + "\n"


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < window:
        return values
    kernel = np.ones(window) / window
    head = np.cumsum(values[: window - 1]) / np.arange(1, window)
    return np.concatenate([head, np.convolve(values, kernel, mode="valid")])


def plot_curves(rows: list[dict[str, Any]], plots: list[dict[str, Any]], path: Path) -> Path:
    """Training curves against audio seconds: one row of panels per plot entry."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = [r for r in rows if r.get("run_dir")]
    layout = []
    for plot in plots:
        spec = plot.get("panels")
        keys = sorted({str(column_value(r, spec)) for r in trained}) if spec else [""]
        layout.append((plot, spec, keys))
    width = max(len(keys) for _, _, keys in layout)
    fig, axes = plt.subplots(len(layout), width, figsize=(5.5 * width, 3.8 * len(layout)),
                             squeeze=False)
    for i, (plot, spec, keys) in enumerate(layout):
        metric = str(plot["metric"])
        for j in range(width):
            ax = axes[i][j]
            if j >= len(keys):
                ax.axis("off")
                continue
            for row in trained:
                if spec and str(column_value(row, spec)) != keys[j]:
                    continue
                steps, values = _train_series(read_metrics(row["run_dir"]), metric)
                if not len(values):
                    continue
                seconds = steps * row["seconds_per_step"]
                ax.plot(seconds, _smooth(values, int(plot.get("smooth", 1))), lw=1.2,
                        label=row["run"])
            title = metric + (f" — {spec.split(':', 1)[-1]} {keys[j]}" if spec else "")
            ax.set_title(title)
            ax.set_xlabel("audio seconds trained")
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
