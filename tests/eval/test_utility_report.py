"""Tables and plots of utility estimates."""

from __future__ import annotations

import pytest

from ssl_speech.eval.utility_hsic import UtilityEstimate
from ssl_speech.eval.utility_report import format_table, plot_estimates, table_rows, write_table


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    estimates = [UtilityEstimate("u", 0.02, 0.03), UtilityEstimate("class", 0.0, 0.0)]
    path = plot_estimates(estimates, tmp_path / "plot.png", title="test")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tables_list_the_estimates_in_order(tmp_path):
    estimates = [UtilityEstimate("rms", 0.01, 0.02, per_class={0: 0.01, 1: 0.01},
                                 num_segments=40, num_dropped=2, skipped_classes=[3]),
                 UtilityEstimate("f0", 0.05, 0.04, per_class={0: 0.05}, num_segments=20)]
    rows = table_rows(estimates)
    assert [r["rank"] for r in rows] == [1, 2] and rows[0]["pseudo_label"] == "rms"
    assert rows[0]["classes"] == 2 and rows[0]["skipped_classes"] == 1
    assert rows[0]["dropped_segments"] == 2
    lines = write_table(estimates, tmp_path / "t.tsv").read_text().splitlines()
    assert lines[0].split("\t")[:3] == ["rank", "pseudo_label", "hsic_uniform"]
    assert lines[2].split("\t")[1] == "f0"
    assert format_table(estimates).splitlines()[2].startswith("| 1 | rms | 0.01 |")

