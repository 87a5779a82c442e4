"""Ranking pseudo-labels on a corpus: settings, controls, the ranking script."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_speech.eval.utility import rank_pseudo_labels
from ssl_speech.eval.utility_report import format_table, write_table


@pytest.fixture(scope="module")
def tiny_utterances(tiny_corpus):
    from ssl_speech.data.corpus import load_corpus
    from ssl_speech.data.labels import read_alignments

    corpus = load_corpus(root=tiny_corpus, split="train")
    return list(corpus)[:8], read_alignments(tiny_corpus / "alignments.txt")


@pytest.mark.slow
@pytest.mark.parametrize("task", ["phone", "speaker"])
def test_rank_pseudo_labels_on_the_embedded_corpus(tiny_utterances, task, tmp_path):
    utterances, alignments = tiny_utterances
    candidates = ["f0", "rms", "mfcc", "spectral_centroid"]
    estimates = rank_pseudo_labels(utterances, candidates, task=task, alignments=alignments,
                                   chunk_frames=100, min_class_size=3)
    assert sorted(e.name for e in estimates) == sorted(candidates)
    uniform = [e.uniform for e in estimates]
    assert uniform == sorted(uniform) and all(np.isfinite(uniform))
    assert all(e.uniform >= 0 for e in estimates)
    by_name = {e.name: e for e in estimates}
    if task == "phone":
        assert by_name["f0"].num_dropped > 0  # some unvoiced phones have no F0 at all
    assert by_name["rms"].num_dropped == 0
    assert len(by_name["rms"].per_class) >= (10 if task == "phone" else 2)
    table = write_table(estimates, tmp_path / "table.tsv").read_text().splitlines()
    assert table[0].split("\t")[:3] == ["rank", "pseudo_label", "hsic_uniform"]
    assert len(table) == 1 + len(candidates)
    assert format_table(estimates).count("\n") == 1 + len(candidates)


def test_rank_rejects_a_task_without_its_labels(tiny_utterances):
    utterances, _ = tiny_utterances
    with pytest.raises(ValueError, match="alignments"):
        rank_pseudo_labels(utterances, ["rms"], task="phone")
    with pytest.raises(ValueError, match="task"):
        rank_pseudo_labels(utterances, ["rms"], task="emotion")
    with pytest.raises(ValueError, match="unknown pseudo-label"):
        rank_pseudo_labels(utterances, ["pitch"], task="speaker")


@pytest.mark.slow
def test_the_ranking_script_writes_its_table_plot_and_json(tiny_corpus, tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "pseudo_label_utility.py"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "--root", str(tiny_corpus), "--task",
         "speaker", "--candidates", "rms", "zcr", "--chunk-seconds", "1", "--min-class-size",
         "3", "--threads", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(figures) == {"rms", "zcr"} and all(v >= 0 for v in figures.values())
    assert (tmp_path / "utility_speaker.tsv").read_text().count("\n") == 3
