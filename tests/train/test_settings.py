"""TrainerSettings: every bad value named with its key and the fix, before any data is read."""

from __future__ import annotations

import pytest
import torch

from ssl_speech.train.settings import TrainerSettings


@pytest.mark.parametrize("options,message", [
    ({"precision": "fp16"}, "trainer.precision='fp16': expected 32, bf16 or 16"),
    ({"max_steps": "abc"}, "trainer.max_steps='abc': expected a whole number"),
    ({"max_steps": 2.5}, "trainer.max_steps=2.5: expected a whole number"),
    ({"grad_clip": "x"}, "trainer.grad_clip='x': expected a number"),
    ({"progress": "maybe"}, "trainer.progress='maybe': expected true or false"),
    ({"max_steps": 0}, "trainer.max_steps must be >= 1, got 0"),
    ({"val_every": -1}, r"trainer.val_every must be >= 0 \(0 disables\), got -1"),
    ({"val_batches": 0}, "trainer.val_batches must be >= 1, got 0"),
    ({"resume_changed": "maybe"}, "trainer.resume_changed='maybe': expected refuse"),
    ({"wandb": "yes"}, "trainer.wandb='yes': expected null, true or a mapping"),
    ({"wandb": {"projekt": "x"}}, r"trainer.wandb: unknown keys \['projekt'\]"),
    ({"wandb": {"mode": "later"}}, "trainer.wandb.mode='later': expected one of"),
    ({"max_stepz": 3}, r"trainer: unknown keys \['max_stepz'\]"),
    ({"collapse": {"min_effective_rank": 2}}, "set trainer.diagnostics_every > 0"),
])
def test_bad_settings_name_the_key(options, message):
    with pytest.raises(ValueError, match=message):
        TrainerSettings.from_config(options)


def test_from_config_casts_and_skips_the_entry_point_keys():
    settings = TrainerSettings.from_config({"max_steps": 5.0, "grad_clip": 1, "device": "cpu",
                                            "threads": 2, "resume": "auto",
                                            "collective_timeout_s": 30, "wandb": True})
    assert settings.max_steps == 5 and isinstance(settings.max_steps, int)
    assert settings.grad_clip == 1.0 and isinstance(settings.grad_clip, float)
    assert settings.wandb == {}


def test_fp16_needs_cuda():
    settings = TrainerSettings(precision="16")
    settings.check_device(torch.device("cuda", 0))  # fine
    with pytest.raises(ValueError, match="precision=16 needs a CUDA device; use bf16 on CPU"):
        settings.check_device(torch.device("cpu"))
