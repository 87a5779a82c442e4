"""The scale benchmark: its quick mode end to end, and the peak-memory measurement."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from ssl_speech.studies.measured_process import run_measured
from ssl_speech.studies.scale_benchmark import ScaleSizes, main, markdown_report
from ssl_speech.studies.scale_inputs import build_tree

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="peak memory is read from /proc (Linux)")


def _allocate(megabytes: int) -> int:
    """Touch ``megabytes`` MiB of fresh memory (every page written) and return its sum."""
    block = np.ones(megabytes * 2**20, dtype=np.uint8)
    return int(block.sum())


def test_run_measured_sees_a_known_allocation():
    (nothing, base), (touched, peak) = run_measured(_allocate, 0), run_measured(_allocate, 200)
    assert (nothing, touched) == (0, 200 * 2**20)
    grown = (peak - base) / 2**20
    # 200 MiB of pages (the sum's temporaries are small); a little slack for the allocator
    assert 190 <= grown <= 260, grown


def _fail() -> None:
    raise ValueError("broken on purpose")


def test_run_measured_reports_the_child_s_error():
    with pytest.raises(RuntimeError, match="broken on purpose"):
        run_measured(_fail)


def test_build_tree_has_librispeech_layout(tmp_path):
    source = tmp_path / "src"
    (source / "19" / "198").mkdir(parents=True)
    (source / "19" / "198" / "19-198-0003.flac").write_bytes(b"x")
    files = build_tree(source, tmp_path / "tree", 3)
    rel = sorted(str(f.relative_to(tmp_path / "tree")) for f in files)
    assert rel == ["10019/198/10019-198-0003.flac", "19/198/19-198-0003.flac",
                   "20019/198/20019-198-0003.flac"]


def test_a_corpus_without_labels_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="alignments.txt, abx"):
        main(["--out", str(tmp_path / "out"), "--quick", "--corpus", str(tmp_path)])


def test_sizes_are_validated():
    with pytest.raises(ValueError, match="scan_files"):
        ScaleSizes(scan_files=0)
    with pytest.raises(ValueError, match="probe_scales"):
        ScaleSizes(probe_scales=())


@pytest.mark.slow
def test_quick_mode_writes_every_stage(tmp_path, tiny_corpus):
    rows = main(["--out", str(tmp_path), "--quick", "--step-ms", "250",
                 "--corpus", str(tiny_corpus)])
    written = [json.loads(line) for line in (tmp_path / "scale.jsonl").read_text().splitlines()]
    assert written == json.loads(json.dumps(rows))
    by_stage: dict[str, list[dict]] = {}
    for row in written:
        by_stage.setdefault(row["stage"], []).append(row)
    assert by_stage["run"][0]["sizes"]["scan_files"] == 300
    scans = {r["scan"]: r for r in by_stage["scan"]}
    assert [scans[run]["files"] for run in ("first_cold", "first_warm", "cached")] == [300] * 3
    assert scans["speedup over first_cold"]["speedup"] == pytest.approx(
        scans["first_cold"]["seconds"] / scans["cached"]["seconds"])
    assert scans["first_cold"]["train-clean-100_s"] == pytest.approx(
        28_539 * scans["first_cold"]["seconds"] / 300)
    assert by_stage["step"] == [{"stage": "step", "step_ms": 250.0, "step_source": "given",
                                 "step_windows_per_s": 32.0, "batch_size": 8, "window": 20480}]
    pipes = {r["workers"]: r for r in by_stage["pipeline"]}
    assert set(pipes) == {0, 2} and pipes[2]["held"] == (pipes[2]["ratio"] >= 5)
    assert pipes[0]["windows"] == 4 * 8
    probes = by_stage["probe"]
    assert [p["scale"] for p in probes] == [1, 4]
    assert probes[1]["frames"] == 4 * probes[0]["frames"]
    for p in probes:
        assert p["peak_rss_mb"] > 0 and p["frames_per_s"] > 0 and p["dtype"] == "float16"
        assert p["peak_anon_mb"] + p["peak_file_mb"] >= 0.9 * p["peak_rss_mb"]
        assert 0 <= p["validation_accuracy"] <= 1
    flat = by_stage["probe_flat"][0]
    assert flat["frames_growth"] == 4 and flat["held"] == (flat["rss_growth"] <= 1.2)
    abx = by_stage["abx"]
    assert [a["items"] for a in abx] == [100, 200]
    assert all(a["tokens"] <= a["items"] and a["abx_s"] > 0 for a in abx)
    assert by_stage["abx_growth"][0]["dev_clean_s_estimate"] > 0
    report = (tmp_path / "scale.md").read_text()
    assert report == markdown_report(written) and "### probe_flat" in report
    assert not (tmp_path / "stores" / "x4").exists()  # stores are removed once measured
