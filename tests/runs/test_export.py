"""Export: a checkpoint becomes config.json + model.safetensors that reloads identically."""

from __future__ import annotations

import json

import pytest
import torch

from ssl_speech.nn.model import SSLModel
from ssl_speech.nn.model_config import build_model
from ssl_speech.objectives.frozen_teacher import FrozenTeacher
from ssl_speech.runs import checkpoint as ckpt
from ssl_speech.runs.export import export_model, main

pytest.importorskip("safetensors")

CONFIG = {
    "encoder": {"_target_": "ssl_speech.nn.encoders.CPCEncoder", "dim": 16},
    "context": {"_target_": "ssl_speech.nn.context.TransformerContext", "input_dim": 16,
                "dim": 16, "num_layers": 2, "num_heads": 2, "ffn_dim": 32, "causal": False},
    "objective": {"_target_": "ssl_speech.objectives.mgf.MGF", "dim": 16},
    "seed": 3,
}


@pytest.fixture
def run_dir(tmp_path):
    torch.manual_seed(0)
    model = build_model(CONFIG, "test")
    optimizer_state = {"exp_avg": [torch.randn_like(p) for p in model.parameters()]}
    run = tmp_path / "run"
    ckpt.save_checkpoint({"model": model.state_dict(), "optimizer": optimizer_state,
                          "config": CONFIG, "step": 42}, ckpt.checkpoint_path(run, 42))
    return run


def test_export_round_trip_gives_identical_features(run_dir, tmp_path):
    out = export_model(run_dir, tmp_path / "exported")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    checkpoint_file = ckpt.checkpoint_path(run_dir, 42)
    assert (out / "model.safetensors").stat().st_size < checkpoint_file.stat().st_size

    original = ckpt.load_model(checkpoint_file)
    wav = torch.randn(16000 + 77)
    expected = original.extract(wav, layers="all")
    for reloaded in (SSLModel.from_pretrained(out), ckpt.load_model(out)):
        assert not reloaded.training
        got = reloaded.extract(wav, layers="all")
        assert list(got) == ["encoder", "context.0", "context.1"]
        for name in expected:
            assert torch.equal(got[name], expected[name]), name


def test_exported_config_describes_the_model(run_dir, tmp_path):
    out = export_model(ckpt.checkpoint_path(run_dir, 42), tmp_path / "exported")
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "ssl_speech.SSLModel" and config["format_version"] == 1
    assert config["encoder"] == CONFIG["encoder"] and config["context"] == CONFIG["context"]
    assert (config["sample_rate"], config["hop"], config["frame_rate"]) == (16000, 160, 100.0)
    assert config["layer_names"] == ["encoder", "context.0", "context.1"]
    provenance = config["provenance"]
    assert provenance["step"] == 42
    assert provenance["objective"] == "ssl_speech.objectives.mgf.MGF"
    assert provenance["checkpoint"].endswith("ckpt-00000042.pt")
    assert provenance["checkpoint_sha256"] == ckpt.file_sha256(ckpt.checkpoint_path(run_dir, 42))
    assert provenance["training_config"]["seed"] == 3
    # Exporting an exported directory keeps where it came from.
    again = json.loads((export_model(out, tmp_path / "again") / "config.json").read_text())
    assert again["provenance"]["checkpoint_sha256"] == provenance["checkpoint_sha256"]


def test_export_of_a_model_in_memory_and_of_one_without_config(tmp_path):
    model = build_model(CONFIG, "test")
    out = export_model(model, tmp_path / "exported")
    reloaded = SSLModel.from_pretrained(out)
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor)
    bare = SSLModel(model.encoder, model.context)
    with pytest.raises(ValueError, match="does not know its config"):
        export_model(bare, tmp_path / "bare")


def test_frozen_teacher_loads_an_exported_directory(run_dir, tmp_path):
    out = export_model(run_dir, tmp_path / "exported")
    teacher = FrozenTeacher(checkpoint=out, layer="context.0")
    reference = FrozenTeacher(checkpoint=run_dir, layer="context.0")
    wav = torch.randn(2, 1, 3200)
    assert torch.equal(teacher.features(wav), reference.features(wav))
    assert teacher.path == (out / "model.safetensors").resolve()


def test_from_pretrained_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an exported model directory"):
        SSLModel.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        SSLModel.from_pretrained(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not an ssl_speech model config"):
        SSLModel.from_pretrained(tmp_path / "empty")


def test_push_to_hub_uploads_the_exported_layout(tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    uploaded = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, repo_id, folder_path, commit_message):
            uploaded["files"] = sorted(p.name for p in __import__("pathlib").Path(
                folder_path).iterdir())
            uploaded["repo"] = repo_id

    monkeypatch.setattr(hub, "HfApi", FakeApi)
    url = build_model(CONFIG, "test").push_to_hub("someone/tiny-cpc")
    assert url.endswith("someone/tiny-cpc")
    assert uploaded == {"files": ["config.json", "model.safetensors"], "repo": "someone/tiny-cpc"}


def test_command_line(run_dir, tmp_path, capsys):
    assert main([str(run_dir), str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "model.safetensors").is_file()
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / "nowhere"), str(tmp_path / "x")])
    assert info.value.code == 2
    assert "error: checkpoint" in capsys.readouterr().err


def test_an_incomplete_export_is_named(run_dir, tmp_path):
    out = export_model(run_dir, tmp_path / "exported")
    (out / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors: the export is incomplete"):
        ckpt.load_model(out)


def test_a_missing_relative_path_is_not_silently_taken_for_a_hub_repo(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="neither a local exported directory nor a Hub"):
        SSLModel.from_pretrained("exported/missing", local_files_only=True,
                                 cache_dir=tmp_path / "cache")


@pytest.mark.slow
def test_a_trained_run_exports_and_reloads_everywhere_to_the_same_features(tiny_corpus,
                                                                             tmp_path):
    """Train 3 steps, export; from_pretrained, load_model, torch.hub and the s3prl upstream
    all give the checkpoint's features."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from ssl_speech.config import config_dir
    from ssl_speech.integrations.s3prl import UpstreamExpert
    from ssl_speech.train.__main__ import run

    root, run_dir = tiny_corpus, tmp_path / "run"
    overrides = [
        "objective=cpc", "data=librispeech", f"data.root={root}",
        f"data.alignments={root}/alignments.txt", "data.train_split=train",
        "data.dev_split=dev", "data.window=3200", "data.batch_size=4", "data.num_workers=0",
        "data.in_memory=true", "encoder.dim=32", "context.dim=32", "trainer.max_steps=3",
        "trainer.checkpoint_every=3", "trainer.val_every=0", "trainer.progress=false",
        "trainer.tensorboard=false", "trainer.device=cpu", "optim.warmup_steps=1",
        "probe.enabled=false", f"run_dir={run_dir}", "run_name=test",
        "objective.num_steps=4", "objective.num_negatives=16",
    ]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        run(compose(config_name="config", overrides=overrides))

    out = export_model(run_dir, tmp_path / "exported")
    reference = ckpt.load_model(run_dir)
    wavs = [torch.randn(16000), torch.randn(7000)]
    expected = [reference.extract(w, layers="all") for w in wavs]
    repo = Path(__file__).resolve().parents[2]
    loaded = {
        "from_pretrained": SSLModel.from_pretrained(out),
        "load_model": ckpt.load_model(out),
        "torch.hub": torch.hub.load(str(repo), "model", str(out), source="local"),
    }
    for how, model in loaded.items():
        for wav, want in zip(wavs, expected):
            got = model.extract(wav, layers="all")
            assert all(torch.equal(got[k], want[k]) for k in want), how
    upstream = UpstreamExpert(out)
    with torch.no_grad():
        hidden = upstream(wavs)["hidden_states"]
    for name, h in zip(upstream.layer_names, hidden):
        for b, want in enumerate(expected):
            T = want[name].shape[0]
            torch.testing.assert_close(h[b, :T], want[name], atol=1e-5, rtol=1e-5)
    provenance = json.loads((out / "config.json").read_text())["provenance"]
    assert provenance["step"] == 3 and provenance["objective"].endswith(".CPC")
