"""Ranking pseudo-labels on a corpus: settings, controls, the ranking script."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_speech.eval.utility import (
    CLASS_CONTROL,
    NOISE_CONTROL,
    OURS,
    REFERENCE,
    EstimatorSetting,
    estimator_setting,
    rank_pseudo_labels,
)
from ssl_speech.eval.utility_report import format_table, write_table


@pytest.fixture(scope="module")
def tiny_utterances(tiny_corpus):
    from ssl_speech.data.corpus import load_corpus
    from ssl_speech.data.labels import read_alignments

    corpus = load_corpus(root=tiny_corpus, split="train")
    return list(corpus)[:8], read_alignments(tiny_corpus / "alignments.txt")


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["ours", "reference"])
def test_the_controls_land_where_the_docs_say(tiny_utterances, setting):
    """docs/pseudo_label_utility.md, "Controls": ours puts the class function at exactly 0,
    first, and white noise above it but below the most dependent descriptor (with classes this
    small its O(1/n) bias even passes some descriptors); the reference centring puts the class
    function last (least useful)."""
    utterances, alignments = tiny_utterances
    candidates = ["f0", "voicing", "rms", "zcr", "spectral_centroid", "mfcc", "loudness"]
    estimates = rank_pseudo_labels(utterances, candidates, task="phone", alignments=alignments,
                                   setting=setting)
    names = [e.name for e in estimates]
    assert sorted(names) == sorted(candidates + [NOISE_CONTROL, CLASS_CONTROL])
    by_name = {e.name: e.uniform for e in estimates}
    descriptors = [by_name[n] for n in candidates]
    if setting == "ours":
        assert names[0] == CLASS_CONTROL and abs(by_name[CLASS_CONTROL]) < 1e-9
        assert 0 < by_name[NOISE_CONTROL] < max(descriptors)
    else:
        assert names[-1] == CLASS_CONTROL and by_name[CLASS_CONTROL] > 0.5
    assert by_name[NOISE_CONTROL] > 0


def test_settings_are_named_and_validated():
    assert estimator_setting("ours") is OURS and estimator_setting(REFERENCE) is REFERENCE
    assert (REFERENCE.centring, REFERENCE.variance, REFERENCE.per_dimension) == (
        "reference", 0.05, False)
    assert (REFERENCE.phone_points, REFERENCE.speaker_points) == (10, 30)
    with pytest.raises(ValueError, match="unknown estimator setting"):
        estimator_setting("paper")
    with pytest.raises(ValueError, match="target_scaling"):
        EstimatorSetting("mine", target_scaling="utterances")


@pytest.mark.slow
@pytest.mark.parametrize("task", ["phone", "speaker"])
def test_rank_pseudo_labels_on_the_embedded_corpus(tiny_utterances, task, tmp_path):
    utterances, alignments = tiny_utterances
    candidates = ["f0", "rms", "mfcc", "spectral_centroid"]
    estimates = rank_pseudo_labels(utterances, candidates, task=task, alignments=alignments,
                                   chunk_frames=100, min_class_size=3, controls=False)
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
    assert set(figures) == {"rms", "zcr", NOISE_CONTROL, CLASS_CONTROL}
    assert figures[CLASS_CONTROL] == pytest.approx(0.0, abs=1e-9)
    assert (tmp_path / "utility_speaker.tsv").read_text().count("\n") == 5
