"""Probe protocols: the converged default, CPC_audio's exactly, validation of settings."""

from __future__ import annotations

import pytest

from ssl_speech.eval.protocols import CONVERGED, CPC_AUDIO, ProbeProtocol


def test_cpc_audio_is_the_reference_protocol_and_converged_the_default():
    assert (CPC_AUDIO.name, CPC_AUDIO.epochs, CPC_AUDIO.lr) == ("cpc_audio", 10, 2e-4)
    assert not CPC_AUDIO.standardize and CPC_AUDIO.stopping is None
    assert ProbeProtocol() == CONVERGED and CONVERGED.name == "converged"
    assert CONVERGED.standardize and CONVERGED.stopping is not None
    assert CONVERGED.training_arguments()["validation_fraction"] == 0.1
    assert "CPC_audio" not in CONVERGED.describe() and "10 epochs" in CPC_AUDIO.describe()


def test_named_protocols_take_changes_and_ignore_unset_ones():
    assert ProbeProtocol.named("cpc_audio", epochs=None, lr=1e-3).lr == 1e-3
    assert ProbeProtocol.named("cpc_audio", epochs=None).epochs == 10
    assert ProbeProtocol.named("converged", patience=9).stopping.patience == 9
    with pytest.raises(ValueError, match="unknown probe protocol 'fast'"):
        ProbeProtocol.named("fast")


@pytest.mark.parametrize("changes, message", [
    ({"patience": None}, "go together"),
    ({"validation_fraction": 1.0}, r"in \(0, 1\)"),
    ({"patience": 0}, "patience >= 1"),
    ({"epochs": 0}, "epochs >= 1"),
    ({"hidden": 0}, "hidden must be"),
])
def test_bad_settings_are_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        ProbeProtocol(**changes)
