"""hubconf.py: torch.hub.load(repo, ..., source="local") builds the exported model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssl_speech.nn.model_config import build_model
from ssl_speech.runs import checkpoint as ckpt
from ssl_speech.runs.export import export_model

REPO = Path(__file__).resolve().parents[2]
CONFIG = {"encoder": {"_target_": "ssl_speech.nn.encoders.CPCEncoder", "dim": 16},
          "context": {"_target_": "ssl_speech.nn.context.GRUContext", "input_dim": 16,
                      "dim": 8}}


def test_hub_entry_points_load_an_exported_dir_and_a_checkpoint(tmp_path):
    pytest.importorskip("safetensors")
    torch.manual_seed(0)
    original = build_model(CONFIG, "test").eval()
    exported = export_model(original, tmp_path / "exported")
    path = ckpt.save_checkpoint({"model": original.state_dict(), "config": CONFIG, "step": 1},
                                tmp_path / "ckpt.pt")
    wav = torch.randn(8000)
    expected = original.extract(wav, layers="all")
    for source in (exported, path):
        loaded = torch.hub.load(str(REPO), "model", str(source), source="local")
        got = loaded.extract(wav, layers="all")
        for name in expected:
            assert torch.equal(got[name], expected[name])
    upstream = torch.hub.load(str(REPO), "s3prl_upstream", str(exported), source="local")
    assert upstream.get_downsample_rates("hidden_states") == 160


def test_hub_refuses_a_hostile_checkpoint(tmp_path):
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("keep")
    hostile = {**CONFIG, "encoder": {"_target_": "pathlib.Path.unlink", "_args_": [str(sentinel)]}}
    path = ckpt.save_checkpoint({"model": {}, "config": hostile}, tmp_path / "ckpt.pt")
    with pytest.raises(ValueError, match="pathlib.Path.unlink"):
        torch.hub.load(str(REPO), "model", str(path), source="local")
    assert sentinel.read_text() == "keep"
