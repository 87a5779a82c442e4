"""Tables and plots of pseudo-label utility estimates."""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssl_speech.eval.utility_hsic import UtilityEstimate

_COLUMNS = ("rank", "pseudo_label", "hsic_uniform", "hsic_weighted", "classes",
            "skipped_classes", "segments", "dropped_segments")


def table_rows(estimates: Sequence[UtilityEstimate]) -> list[dict[str, object]]:
    """One dict per estimate, in the given order, with the columns of the written table."""
    return [
        {"rank": i + 1, "pseudo_label": e.name, "hsic_uniform": e.uniform,
         "hsic_weighted": e.weighted, "classes": len(e.per_class),
         "skipped_classes": len(e.skipped_classes), "segments": e.num_segments,
         "dropped_segments": e.num_dropped}
        for i, e in enumerate(estimates)
    ]


def format_table(estimates: Sequence[UtilityEstimate]) -> str:
    """A Markdown table of the estimates (lower HSIC: more useful)."""
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for row in table_rows(estimates):
        cells = [f"{v:.5g}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_table(estimates: Sequence[UtilityEstimate], path: str | Path) -> Path:
    """Write the estimates as a tab-separated table with a header line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=_COLUMNS, delimiter="\t")
        writer.writeheader()
        writer.writerows(table_rows(estimates))
    return path


def plot_estimates(estimates: Sequence[UtilityEstimate], path: str | Path, title: str = ""
                   ) -> Path | None:
    """A bar plot PNG of both averages; needs matplotlib (returns ``None`` without it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [e.name for e in estimates]
    at = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(names) + 2.0), 3.5))
    ax.bar(at - 0.2, [e.uniform for e in estimates], 0.4, label="uniform over classes")
    ax.bar(at + 0.2, [e.weighted for e in estimates], 0.4, label="weighted by class size")
    ax.set_xticks(at, names, rotation=45, ha="right")
    ax.set_ylabel("conditional HSIC (lower: more useful)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
