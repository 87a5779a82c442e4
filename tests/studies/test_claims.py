"""The claims study's statistics and table (the runs themselves are the study, not a test)."""

from __future__ import annotations

import math

import pytest

from ssl_speech.studies.claims import CLAIMS, t_interval, table


def test_t_interval_is_the_student_half_width():
    mean, half = t_interval([1.0, 2.0, 3.0])
    # sd = 1, n = 3, t(0.975, 2) = 4.303
    assert mean == pytest.approx(2.0) and half == pytest.approx(4.303 / math.sqrt(3))
    assert math.isnan(t_interval([5.0])[1])


def test_table_pairs_each_seed_with_its_untrained_model():
    rows = []
    for seed, (trained, untrained) in enumerate([(0.70, 0.60), (0.72, 0.61), (0.71, 0.63)]):
        rows.append({"cell": "acpc", "seed": seed, "steps": 300, "phone_acc": trained,
                     "seconds_per_step": 0.2})
        rows.append({"cell": "untrained", "seed": seed, "steps": 0, "phone_acc": untrained,
                     "seconds_per_step": None, "baselines": {"mfcc": {"phone_acc": 0.57}}})
    text = table(rows, CLAIMS["acpc"])
    acpc = next(line for line in text.splitlines() if line.startswith("| acpc "))
    # margins 10, 11, 8 points: mean 9.7
    assert "| 71.0 ± " in acpc and "| 9.7 ± " in acpc
    assert "| mfcc | – | – | 57.0 |" in text


def test_every_claim_has_cells_and_a_budget():
    for name, claim in CLAIMS.items():
        assert claim.cells and claim.steps > 0, name
        assert claim.untrained_cells(), name
