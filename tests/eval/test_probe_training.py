"""Probe training: seeding, the stopping rule, standardisation from a table's rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_speech.eval.frame_store import ArrayFrames
from ssl_speech.eval.probe_training import (
    Standardize,
    Stopping,
    fit_probe,
    fit_table,
    predict,
)


def test_fit_probe_is_seeded_and_leaves_global_rng_alone():
    x = torch.randn(256, 5)
    y = torch.randint(0, 3, (256,))
    state = torch.get_rng_state()
    a, hist_a = fit_probe(x, y, 3, epochs=2, lr=1e-2, batch_size=32, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    b, hist_b = fit_probe(x, y, 3, epochs=2, lr=1e-2, batch_size=32, seed=1)
    assert hist_a == hist_b
    assert torch.equal(predict(a, x), predict(b, x))


def test_standardize_matches_torch_moments_even_with_a_large_offset():
    x = torch.randn(1000, 4, dtype=torch.float64) * torch.tensor([1e-3, 1.0, 10.0, 0.0]) + 1e3
    norm = Standardize.fit(x.float())
    var, mean = torch.var_mean(x, dim=0, correction=0)
    torch.testing.assert_close(norm.mean, mean.float())
    torch.testing.assert_close(norm.std[:3], var.sqrt().float()[:3], rtol=1e-3, atol=0)
    assert norm.std[3] == pytest.approx(1e-5)  # a constant dimension


def test_stopping_keeps_the_best_epoch_and_stops_on_a_plateau():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    x = (np.eye(3, 6)[y] + 0.1 * rng.standard_normal((600, 6))).astype(np.float32)
    table = ArrayFrames(x, y)
    model, history = fit_table(table, 3, np.arange(500), validation_index=np.arange(500, 600),
                               stopping=Stopping(patience=3, min_delta=0.0), epochs=100,
                               lr=5e-2, batch_size=50)
    assert history.converged and history.epochs < 100
    assert history.epochs - history.best_epoch == 3  # stopped `patience` epochs after the best
    assert max(history.validation) == history.validation[history.best_epoch - 1] == 1.0
    with pytest.raises(ValueError, match="needs held-out rows"):
        fit_table(table, 3, np.arange(500), stopping=Stopping())
    with pytest.raises(ValueError, match="patience >= 1"):
        Stopping(patience=0)
