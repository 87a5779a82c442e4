"""The end-of-training probe: trained, untrained and the best spectral baseline."""

from __future__ import annotations

import json

import pytest
import torch

from ssl_speech import load_model
from ssl_speech.data.corpus import load_corpus
from ssl_speech.data.labels import read_alignments
from ssl_speech.eval.quick_probe import compare_with_baselines
from ssl_speech.nn.context import LSTMContext
from ssl_speech.nn.encoders import CPCEncoder
from ssl_speech.nn.model import SSLModel
from ssl_speech.runs.checkpoint import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def save_small_checkpoint(path, seed: int):
    torch.manual_seed(seed)
    model = SSLModel(CPCEncoder(dim=8), LSTMContext(input_dim=8, dim=8))
    config = {"encoder": {"_target_": "ssl_speech.nn.encoders.CPCEncoder", "dim": 8},
              "context": {"_target_": "ssl_speech.nn.context.LSTMContext", "input_dim": 8,
                          "dim": 8},
              "objective": {"_target_": "ssl_speech.objectives.cpc.CPC"}}
    return save_checkpoint({"model": model.state_dict(), "config": config, "step": 3}, path)


def test_quick_probe_compares_trained_untrained_and_log_mel(tmp_path, tiny_corpus, capsys):
    trained = load_model(save_small_checkpoint(tmp_path / "a.pt", seed=0))
    untrained = load_model(save_small_checkpoint(tmp_path / "b.pt", seed=1))
    train = load_corpus(root=tiny_corpus, split="train")
    dev = load_corpus(root=tiny_corpus, split="dev")
    summary = compare_with_baselines(
        trained, untrained, train, dev, read_alignments(tiny_corpus / "alignments.txt"),
        train_utterances=4, test_utterances=2, epochs=2, progress=False)
    assert set(summary) == {"probe_trained", "probe_untrained", "probe_logmel", "probe_mfcc",
                            "probe_best_baseline", "probe_converged"}
    assert summary["probe_best_baseline"] == max(summary["probe_logmel"], summary["probe_mfcc"])
    assert all(0.0 <= v <= 1.0 for v in summary.values())
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == {k: round(v, 4) for k, v in summary.items()}
