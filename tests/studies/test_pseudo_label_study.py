"""The pseudo-label validation study: rank correlation, and a run that continues later."""

from __future__ import annotations

import numpy as np
import pytest


def test_spearman_rank_correlation_and_its_exact_p_value():
    from ssl_speech.studies.pseudo_label_study import spearman

    rho, p = spearman([1, 2, 3, 4, 5, 6], [0.9, 0.8, 0.5, 0.4, 0.2, 0.1])
    assert rho == pytest.approx(-1.0) and p == pytest.approx(2 / 720)  # both extreme orders
    rho, p = spearman([1, 2, 3, 4], [1, 3, 2, 4])
    assert rho == pytest.approx(0.8) and p == pytest.approx(8 / 24)
    rho, _ = spearman([1, 2, 2, 3], [1, 2, 3, 4])  # ties take their average rank
    assert rho == pytest.approx(np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1])
    scipy_stats = pytest.importorskip("scipy.stats")
    x, y = np.random.default_rng(0).normal(size=(2, 12))
    assert spearman(x, y)[0] == pytest.approx(scipy_stats.spearmanr(x, y)[0])
    with pytest.raises(ValueError, match="length"):
        spearman([1, 2], [1, 2])


@pytest.mark.slow
def test_study_runs_and_continues_where_it_stopped(tiny_corpus, tmp_path):
    from ssl_speech.studies.pseudo_label_study import StudySettings, run_study

    settings = StudySettings(
        candidates=("rms", "zcr", "spectral_centroid"), steps=2, encoder_dim=16,
        context_dim=16, window=3200, batch_size=4, warmup_steps=1, probe_train_utterances=4,
        probe_test_utterances=2, probe_epochs=1, estimate_utterances=4,
    )
    lines: list[str] = []
    study = run_study(tmp_path, settings, corpus_root=tiny_corpus, log=lines.append)
    assert [r.name for r in study.rows] == list(settings.candidates)
    assert all(0.0 <= r.probe_accuracy <= 1.0 and r.train_seconds > 0 for r in study.rows)
    assert -1.0 <= study.spearman_uniform[0] <= 1.0
    assert (tmp_path / "study.md").read_text().count("Spearman") == 2
    assert (tmp_path / "runs" / "zcr" / "metrics.jsonl").is_file()
    again = run_study(tmp_path, settings, corpus_root=tiny_corpus, log=lines.append)
    assert sum("read back" in line for line in lines) == 3
    assert [r.probe_accuracy for r in again.rows] == [r.probe_accuracy for r in study.rows]
