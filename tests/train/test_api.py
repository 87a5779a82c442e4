"""Training from Python: compose a config and train it, no command line, no HydraConfig."""

from __future__ import annotations

import pytest

from ssl_speech.config import compose
from ssl_speech.runs import checkpoint as ckpt
from ssl_speech.train.api import RunResult, train


def notebook_config(root, run_dir, *extra):
    return compose([
        "data=librispeech", f"data.root={root}", "data.train_split=train", "data.dev_split=dev",
        "data.window=3200", "data.batch_size=4", "encoder.dim=16", "context.dim=16",
        "objective.num_steps=3", "objective.num_negatives=8", "trainer.max_steps=2",
        "trainer.checkpoint_every=2", "trainer.log_every=1", "trainer.val_every=0",
        "trainer.progress=false", "trainer.tensorboard=false", "trainer.device=cpu",
        "probe.enabled=false", f"run_dir={run_dir}", *extra])


def test_compose_then_train_then_train_again(tiny_corpus, tmp_path, capsys):
    cfg = notebook_config(tiny_corpus, tmp_path / "run")
    result = train(cfg)
    assert isinstance(result, RunResult) and result.step == 2
    assert result.run_dir == tmp_path / "run"
    assert [p.name for p in ckpt.list_checkpoints(result.run_dir)] == ["ckpt-00000002.pt"]
    assert (result.run_dir / "config.resolved.yaml").read_text().count("run_name: cpc-") == 1
    again = train(cfg)  # the same config finds its run, complete
    assert again.step == 2
    assert "run already complete at step 2" in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [
    ("trainer.accumulate=0", "trainer.accumulate must be >= 1, got 0"),
    ("data.batch_size=0", "data.batch_size=0: expected a whole number >= 1"),
    ("trainer.device=tpu", "trainer.device='tpu': expected auto, cpu, cuda or cuda:N"),
    ("trainer.collective_timeout_s=0", "trainer.collective_timeout_s=0.0: must be > 0"),
])
def test_bad_setting_fails_before_the_data_is_read(tmp_path, extra, message):
    cfg = notebook_config(tmp_path / "no-such-corpus", tmp_path / "run", extra)
    with pytest.raises(ValueError, match=message):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_missing_corpus_names_the_option(tmp_path):
    cfg = notebook_config(tmp_path / "no-such-corpus", tmp_path / "run")
    with pytest.raises(FileNotFoundError, match=r"no-such-corpus/splits/train.txt does not "
                                                r"exist"):
        train(cfg)


def test_the_package_itself_trains(tmp_path, monkeypatch):
    import ssl_speech
    import ssl_speech.train
    from ssl_speech.train import api

    seen = []
    monkeypatch.setattr(api, "train", lambda cfg: seen.append(cfg) or "trained")
    assert ssl_speech.train("cfg") == "trained" and seen == ["cfg"]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA device is visible")
def test_cuda_asked_for_without_one_is_named(tmp_path):
    cfg = notebook_config(tmp_path / "no-such-corpus", tmp_path / "run", "trainer.device=cuda")
    with pytest.raises(ValueError, match="trainer.device=cuda but no CUDA device is visible; "
                                         "use auto or cpu"):
        train(cfg)
