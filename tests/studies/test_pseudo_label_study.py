"""The pseudo-label validation study: its runs, the class-function target, a tiny end-to-end run
that continues where it stopped."""

from __future__ import annotations

import pytest
import torch

from ssl_speech.data.batch import Batch
from ssl_speech.objectives.class_function_regression import ClassFunctionRegression
from ssl_speech.studies.pseudo_label_study import (
    RunResult,
    StudySettings,
    candidate_accuracies,
    correlations,
)


class _Frames(torch.nn.Module):
    """A stand-in model: ``(B, 1, S)`` to a context ``(B, S // 160, 4)``."""

    hop = 160

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(160, 4)

    def forward(self, wav):
        frames = wav[:, 0, : wav.shape[-1] // 160 * 160].unflatten(-1, (-1, 160))
        return frames, self.proj(frames)


def test_the_default_study_has_the_issue_design():
    settings = StudySettings()
    assert settings.encoder == "logmel" and len(settings.seeds) >= 2
    assert len(settings.candidates) >= 8
    assert {"noise", "class_function"} <= set(settings.candidates)
    assert settings.estimator_settings == ("ours", "reference")
    runs = settings.runs()
    assert len(runs) == (len(settings.candidates) - 1) * 2 + 2 * 2
    assert [r[1] for r in runs[-4:]] == ["class_function"] * 4  # the control runs come last
    with pytest.raises(ValueError, match="class_function_tasks"):
        StudySettings(class_function_tasks=("emotion",))
    with pytest.raises(ValueError, match="unknown pseudo-label"):
        StudySettings(candidates=("rms", "zcr", "pitch"))


def test_the_class_function_target_is_constant_within_a_class():
    objective = ClassFunctionRegression("phone", context_dim=4, seed=3)
    phones = torch.tensor([[1, 1, 2, 2, -100, 1]])
    values = objective.class_values(phones)
    assert values[0, 0] == values[0, 1] == values[0, 5] and values[0, 2] == values[0, 3]
    assert values[0, 0] != values[0, 2] and torch.isnan(values[0, 4])
    batch = Batch(wav=torch.randn(1, 1, 960), speaker=torch.tensor([0]), phones=phones)
    out = objective(_Frames(), batch)
    assert out.loss.dim() == 0 and out.loss.requires_grad and "loss/regression" in out.metrics
    with pytest.raises(ValueError, match="batch.phones"):
        objective(_Frames(), Batch(wav=torch.randn(1, 1, 960), speaker=torch.tensor([0])))
    speaker = ClassFunctionRegression("speaker", context_dim=4)
    assert speaker(_Frames(), Batch(wav=torch.randn(2, 1, 960),
                                    speaker=torch.tensor([0, 1]))).loss.isfinite()


def test_correlations_use_one_point_per_candidate():
    runs = [RunResult(f"{c}-seed{s}", c, s, acc + s * 0.01, None, 0.0, 1.0)
            for c, acc in (("a", 0.5), ("b", 0.4), ("c", 0.3)) for s in (0, 1)]
    assert candidate_accuracies(runs, "phone") == pytest.approx({"a": 0.505, "b": 0.405,
                                                                 "c": 0.305})
    estimates = {"ours": {"phone": {"a": 0.1, "b": 0.2, "c": 0.3},
                          "speaker": {"a": 0.1, "b": 0.2, "c": 0.3}}}
    result = correlations(runs, estimates)
    assert result["ours"]["phone"].rho == pytest.approx(-1.0)
    assert "speaker" not in result["ours"]  # no speaker accuracies: nothing to correlate


@pytest.mark.slow
def test_study_runs_and_continues_where_it_stopped(tiny_corpus, tmp_path):
    from ssl_speech.studies.pseudo_label_study import run_study

    settings = StudySettings(
        candidates=("rms", "zcr", "noise", "class_function"), seeds=(0,), steps=2,
        encoder_dim=16, context_dim=16, window=3200, batch_size=4, warmup_steps=1,
        probe_train_utterances=4, probe_test_utterances=2, probe_epochs=1,
        speaker_utterances=6, speaker_epochs=1, estimate_utterances=4,
        class_function_tasks=("speaker",),
    )
    lines: list[str] = []
    study = run_study(tmp_path, settings, corpus_root=tiny_corpus, log=lines.append)
    assert [r.run for r in study.runs] == ["rms-seed0", "zcr-seed0", "noise-seed0",
                                           "class_function-speaker-seed0"]
    control = study.runs[-1]
    assert control.phone_accuracy is None and 0.0 <= control.speaker_accuracy <= 1.0
    assert all(0.0 <= r.speaker_accuracy <= 1.0 and r.train_seconds > 0 for r in study.runs)
    assert set(study.estimates) == {"ours", "reference"}
    assert abs(study.estimates["ours"]["phone"]["class_function"]) < 1e-9
    assert -1.0 <= study.correlations["ours"]["phone"]["rho"] <= 1.0
    assert (tmp_path / "study.md").read_text().count("Spearman") >= 2
    assert (tmp_path / "runs" / "zcr-seed0" / "metrics.jsonl").is_file()
    again = run_study(tmp_path, settings, corpus_root=tiny_corpus, log=lines.append)
    assert sum("read back" in line for line in lines) == 4
    assert [r.phone_accuracy for r in again.runs] == [r.phone_accuracy for r in study.runs]
