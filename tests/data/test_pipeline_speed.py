"""The data pipeline measurements: the tree they build, the figures they report."""

from __future__ import annotations

import json

import pytest

from ssl_speech.data import pipeline_speed
from ssl_speech.data.corpus import scan_directory


@pytest.mark.filterwarnings("ignore:.*shorter than min_samples")  # the tiny tree's short files
def test_tree_scan_and_loader_figures(tiny_tree, tmp_path, capsys):
    root, lengths = tiny_tree
    out = tmp_path / "tree"
    assert pipeline_speed.write_tree(out, 30, root, per_chapter=20) == 30
    corpus = scan_directory(out)
    assert len(corpus) == 30 and len(corpus.speakers) == 1  # 2 chapters, 2 per speaker
    scan = pipeline_speed.measure_scan(out, threads=2)
    assert scan["files"] == 30 and scan["cached_s"] > 0 and scan["uncached_files_per_s"] > 0
    pipeline_speed.main(["loader", str(out), "--workers", "0", "--batches", "3"])
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["workers"] == 0 and 0 < figures["batches"] <= 3
    assert figures["windows"] == 8 * figures["batches"] and figures["windows_per_s"] > 0
