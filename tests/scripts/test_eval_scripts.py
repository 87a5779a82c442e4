"""The evaluation scripts as a user runs them: composition, JSON last lines, errors, report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from ssl_speech.config import config_dir
from ssl_speech.nn.context import LSTMContext
from ssl_speech.nn.encoders import CPCEncoder
from ssl_speech.nn.model import SSLModel
from ssl_speech.runs.checkpoint import save_checkpoint
from ssl_speech.train.__main__ import run

REPO = Path(__file__).resolve().parents[2]


def script(name: str, *args, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / f"{name}.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=600)
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def last_json(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def hand_made_run(run_dir: Path) -> Path:
    torch.manual_seed(0)
    model = SSLModel(CPCEncoder(dim=8), LSTMContext(input_dim=8, dim=8))
    config = {"encoder": {"_target_": "ssl_speech.nn.encoders.CPCEncoder", "dim": 8},
              "context": {"_target_": "ssl_speech.nn.context.LSTMContext", "input_dim": 8,
                          "dim": 8},
              "objective": {"_target_": "ssl_speech.objectives.cpc.CPC"}}
    save_checkpoint({"model": model.state_dict(), "config": config, "step": 1},
                    run_dir / "checkpoints" / "ckpt-00000001.pt")
    return run_dir


@pytest.mark.slow
def test_scripts_compose_through_a_feature_directory(tmp_path, tiny_corpus):
    run_dir = hand_made_run(tmp_path / "run")
    features = tmp_path / "features"
    exported = last_json(script("export_features", run_dir, features, "--corpus", tiny_corpus,
                                "--threads", 1))
    assert exported["num_utterances"] == 21 and exported["frame_step"] == 0.01
    assert exported["dim"] == 8 and exported["layer"] == "context"

    items = tiny_corpus / "abx" / "test_heldout_speakers.item"
    from_dir = last_json(script("abx", features, items, "--frame-step", 0.01))
    from_checkpoint = last_json(script("abx", run_dir, items, "--corpus", tiny_corpus,
                                       "--threads", 1))
    assert set(from_dir) == {"within", "across"} and from_dir == from_checkpoint

    probe = last_json(script(
        "phone_probe", "--features", features, "--alignments", tiny_corpus / "alignments.txt",
        "--train-list", tiny_corpus / "splits" / "train.txt",
        "--test-list", tiny_corpus / "splits" / "test.txt", "--corpus", tiny_corpus,
        "--epochs", 2, "--threads", 1))
    for prefix in ("", "baseline_", "mfcc_"):
        for key in ("accuracy", "heldout_speakers_accuracy"):
            assert 0.0 <= probe[prefix + key] <= 1.0

    speakers = last_json(script("speaker_probe", "--features", features, "--corpus",
                                tiny_corpus, "--epochs", 2, "--threads", 1))
    assert set(speakers) == {"accuracy", "baseline_accuracy", "mfcc_accuracy", "chance"}


def test_bad_input_ends_with_one_clear_error(tmp_path, tiny_corpus):
    features = tmp_path / "features"
    features.mkdir()
    for line in (tiny_corpus / "alignments.txt").read_text().splitlines():
        utt, *labels = line.split()
        np.save(features / f"{utt}.npy", np.zeros((len(labels), 4), dtype=np.float32))
    test_list = tmp_path / "test.txt"
    test_list.write_text("ghost-1\nghost-2\n" + (tiny_corpus / "splits" / "test.txt").read_text())
    n = len(test_list.read_text().split())
    proc = script("phone_probe", "--features", features, "--corpus", tiny_corpus,
                  "--test-list", test_list, "--epochs", 1, "--threads", 1, ok=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"error: 2 of {n} utterances of the test list are not in the corpus under")


def test_phone_probe_of_another_corpus_needs_no_corpus_option(tmp_path, tiny_corpus):
    # features of a corpus that is not the embedded one: the features, the alignments and the
    # lists hold all the probe needs
    features = tmp_path / "features"
    features.mkdir()
    rng = np.random.default_rng(0)
    for line in (tiny_corpus / "alignments.txt").read_text().splitlines():
        utt, *labels = line.split()
        x = rng.normal(size=(len(labels), 8)).astype(np.float32)
        x[np.arange(len(labels)), np.asarray(labels, dtype=int) % 8] += 2.0
        np.save(features / f"other-{utt}.npy", x)
    alignments = tmp_path / "alignments.txt"
    alignments.write_text("".join(f"other-{line}\n" for line in
                                  (tiny_corpus / "alignments.txt").read_text().splitlines()))
    lists = {}
    for name in ("train", "test"):
        lists[name] = tmp_path / f"{name}.txt"
        ids = (tiny_corpus / "splits" / f"{name}.txt").read_text().split()
        lists[name].write_text("".join(f"other-{u}\n" for u in ids))
    proc = script("phone_probe", "--features", features, "--alignments", alignments,
                  "--train-list", lists["train"], "--test-list", lists["test"],
                  "--protocol", "cpc_audio", "--epochs", 3, "--threads", 1)
    figures = last_json(proc)
    assert set(figures) == {"accuracy", "chance", "protocol"} and figures["protocol"] == "cpc_audio"
    assert 0.0 <= figures["accuracy"] <= 1.0
    assert "baselines are skipped" in proc.stderr


def test_every_command_has_help_and_debug_shows_the_traceback(tmp_path):
    for module in ("evaluate", "export_features", "phone_probe", "speaker_probe", "abx"):
        proc = subprocess.run([sys.executable, "-m", f"ssl_speech.eval.commands.{module}",
                               "--help"], capture_output=True, text=True, timeout=120,
                              cwd=REPO)
        assert proc.returncode == 0 and "--debug" in proc.stdout, (module, proc.stderr[-500:])
    proc = subprocess.run([sys.executable, "-m", "ssl_speech.studies.compare", "--help"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0 and "rpc_batch" in proc.stdout
    missing = tmp_path / "nothing.item"
    quiet = script("abx", tmp_path, missing, ok=False)
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr
    assert quiet.stderr.strip().splitlines()[-1] == f"error: ABX item file {missing} does not exist"
    loud = script("abx", tmp_path, missing, "--debug", ok=False)
    assert loud.returncode == 1 and "Traceback" in loud.stderr


def tiny_training_config(root: Path, run_dir: Path):
    overrides = [
        "objective=cpc", "data=librispeech", f"data.root={root}",
        f"data.alignments={root}/alignments.txt", "data.train_split=train",
        "data.dev_split=dev", "data.window=3200", "data.batch_size=4", "data.num_workers=0",
        "data.in_memory=true", "encoder.dim=16", "context.dim=16", "objective.num_steps=4",
        "objective.num_negatives=16", "trainer.max_steps=4", "trainer.log_every=1",
        "trainer.checkpoint_every=4", "trainer.val_every=2", "trainer.val_batches=1",
        "trainer.progress=false", "trainer.tensorboard=false", "trainer.device=cpu",
        "trainer.threads=1", "optim.warmup_steps=1", "probe.enabled=false",
        f"run_dir={run_dir}", "run_name=test",
    ]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.mark.slow
def test_evaluate_reports_a_trained_run(tmp_path, tiny_corpus):
    threads = torch.get_num_threads()
    try:
        result = run(tiny_training_config(tiny_corpus, tmp_path / "cpc_run"))
    finally:
        torch.set_num_threads(threads)
    assert result.step == 4
    out = tmp_path / "report"
    proc = script("evaluate", tmp_path / "cpc_run", "--corpus", tiny_corpus, "--items",
                  "test_heldout_speakers", "--out", out, "--epochs", 2, "--threads", 1)
    figures = last_json(proc)
    assert list(figures) == ["cpc_run", "log_mel", "mfcc"]
    assert set(figures["cpc_run"]) == {"phone_acc", "phone_acc_heldout_speakers", "abx_within",
                                       "abx_across", "speaker_acc"}
    report = (out / "report.md").read_text()
    assert "| cpc_run | CPC | context |" in report and "| baseline: log_mel |" in report
    for png in ("scores.png", "confusion.png", "training_curves.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "features" / "cpc_run" / "features.json").read_text())["step"] == 4
