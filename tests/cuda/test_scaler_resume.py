"""fp16 on the device: the gradient scaler's state is saved in the checkpoint and resuming from
it equals the uninterrupted run (scale, growth tracker, losses, weights).

On a CPU the same body runs in bf16 (no scaler: fp16 training is CUDA only), which checks the
resume path but not the scaler.
"""

from __future__ import annotations

import pytest
import torch
from device_runs import train

from ssl_speech.runs import checkpoint as ckpt

pytestmark = pytest.mark.cuda

STEPS = 6
# Resuming replays the same arithmetic; on CUDA some kernels (atomics in index and scatter
# backward passes) add in a varying order, so the weights agree to float error only.
EXACT = dict(rtol=0, atol=0)
CLOSE = dict(rtol=1e-5, atol=1e-6)


def scaler_state(trainer) -> dict:
    return {k: (float(v) if isinstance(v, torch.Tensor) else v)
            for k, v in trainer.scaler.state_dict().items()}


def test_scaler_state_is_saved_and_resumed(device, tmp_path):
    precision = "16" if device.type == "cuda" else "bf16"
    settings = dict(checkpoint_every=3)
    whole, whole_rows = train("cpc", precision, device, tmp_path / "whole", STEPS, **settings)

    part = tmp_path / "resumed"
    train("cpc", precision, device, part, STEPS // 2, **settings)
    saved = torch.load(ckpt.checkpoint_path(part, STEPS // 2), weights_only=True)
    assert "scaler" in saved
    resumed, rows = train("cpc", precision, device, part, STEPS, resume="auto", **settings)
    assert resumed.step == STEPS

    if precision == "16":
        # Not vacuous: the scaler ran, its state was in the checkpoint and came back.
        assert resumed.scaler.is_enabled() and {"scale", "_growth_tracker"} <= set(
            saved["scaler"])
        assert float(saved["scaler"]["scale"]) > 0
    assert scaler_state(resumed) == scaler_state(whole)
    tolerance = EXACT if device.type == "cpu" else CLOSE
    for key in ("loss", "grad_norm", "nonfinite_steps"):
        got = torch.tensor([r[key] for r in rows[STEPS // 2:]])
        want = torch.tensor([r[key] for r in whole_rows[STEPS // 2:]])
        torch.testing.assert_close(got, want, **tolerance, msg=key)
    for a, b in zip(resumed.params, whole.params):
        torch.testing.assert_close(a, b, **tolerance)
