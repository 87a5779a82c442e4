"""Comparison presets: parsing, planning, statistics, and two short runs end to end."""

from __future__ import annotations

import itertools
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from ssl_speech.studies.compare import compose_run, plan_run, run_preset
from ssl_speech.studies.compare import run as compare_command
from ssl_speech.studies.compare_preset import (
    PRESETS_DIR,
    load_preset,
    parse_preset,
    shipped_presets,
)
from ssl_speech.studies.compare_summary import loss_statistics, markdown_table

REPO = Path(__file__).resolve().parents[2]


def minimal(**extra) -> dict:
    return {"budget_seconds": 10, "runs": [{"name": "a", "overrides": ["objective=cpc"]}],
            **extra}


def test_shipped_rpc_batch_preset_plans_equal_audio_per_run(tmp_path):
    preset = load_preset("rpc_batch")
    assert [r.name for r in preset.runs] == ["cpc-b4", "cpc-b8", "cpc-b16",
                                             "rpc-b4", "rpc-b8", "rpc-b16"]
    seconds = set()
    for spec, expected_steps in zip(preset.runs, [1200, 600, 300] * 2):
        overrides, steps, per_step = plan_run(preset, spec, tmp_path)
        assert steps == expected_steps
        seconds.add(steps * per_step)
        assert f"trainer.max_steps={steps}" in overrides
        assert f"optim.warmup_steps={round(0.1 * steps)}" in overrides
        assert f"run_dir={tmp_path / spec.name}" in overrides
    assert seconds == {6144.0}


@pytest.mark.parametrize("raw,message", [
    ({"budget_seconds": 10}, "has no runs"),
    (minimal(budget_seconds=0), "budget_seconds must be > 0"),
    (minimal(runs=[{"name": "a"}, {"name": "a"}]), r"repeated \['a'\]"),
    (minimal(runs=[{"name": "x/y"}]), "cannot be directory names"),
    (minimal(runs=[{"name": "a", "override": []}]), r"unknown keys \['override'\]"),
    (minimal(colums=["run"]), r"unknown keys \['colums'\]"),
    (minimal(columns=["loss_variance"]), "unknown column spec 'loss_variance'"),
    (minimal(columns=["metric:"]), "unknown column spec 'metric:'"),
    (minimal(tail_fraction=0.9), "tail_fraction must be in"),
    (minimal(step_fractions={"optim.warmup_steps": 2}), "is not in"),
    (minimal(plots=[{"metric": "loss", "colour": "red"}]), "a plot is"),
    (minimal(probe={"epoch": 3}), r"unknown probe keys \['epoch'\]"),
    (minimal(probe={"epochs": 0}), "probe.epochs must be >= 1"),
    (minimal(baselines=["spectrogram"]), "baselines"),
    (minimal(probe={"protocol": "fast"}), "unknown probe protocol 'fast'"),
])
def test_bad_presets_are_rejected_with_the_reason(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_preset(raw, "test")


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(FileNotFoundError, match="rpc_batch"):
        load_preset("no_such_preset")


def test_loss_statistics_detrend_and_normalise():
    steps = np.arange(1.0, 101.0)
    line = 10.0 - 0.05 * steps  # 9.95 -> 5.0
    stats = loss_statistics(steps, line, 0.2)
    assert stats["final_loss"] == pytest.approx(line[-20:].mean())
    assert stats["loss_cv"] == pytest.approx(0.0, abs=1e-9)  # a trend is not noise
    noise = np.tile([0.1, -0.1], 50)
    stats = loss_statistics(steps, line + noise, 0.2)
    detrended_std = np.std(noise[-20:] - np.polyval(np.polyfit(steps[-20:], noise[-20:], 1),
                                                    steps[-20:]), ddof=2)
    assert stats["loss_cv"] == pytest.approx(detrended_std / abs(stats["final_loss"]))
    drop = (line + noise)[:20].mean() - stats["final_loss"]
    assert stats["loss_rel_std"] == pytest.approx(detrended_std / drop)
    # Negative losses (RPC) normalise by the magnitude.
    negative = loss_statistics(steps, -(line + noise), 0.2)
    assert negative["loss_cv"] == pytest.approx(stats["loss_cv"])
    assert negative["loss_rel_std"] == math.inf  # it rose: no progress to normalise by
    assert math.isnan(loss_statistics(np.zeros(0), np.zeros(0), 0.2)["final_loss"])


def test_markdown_table_reads_columns_of_every_kind():
    rows = [{"run": "a", "steps": 12, "final_loss": 1.23456, "metrics": {"acc": 0.5},
             "choices": {"objective": "rpc"}, "config": {"data": {"batch_size": 4}},
             "loss_cv": math.inf}]
    columns = [("run", "run"), ("obj", "choice:objective"), ("batch", "config:data.batch_size"),
               ("steps", "steps"), ("loss", "final_loss"), ("acc", "metric:acc"),
               ("cv", "loss_cv"), ("phone", "probe_phone")]
    table = markdown_table(rows, columns)
    assert table.splitlines() == ["| run | obj | batch | steps | loss | acc | cv | phone |",
                                  "|---|---|---|---|---|---|---|---|",
                                  "| a | rpc | 4 | 12 | 1.235 | 0.5 | ∞ | – |"]


def tiny_preset(root: Path, path: Path) -> Path:
    data = [
        "data=librispeech", f"data.root={root}", f"data.alignments={root}/alignments.txt",
        "data.train_split=train", "data.dev_split=dev", "data.window=3200",
        "data.num_workers=0", "encoder.dim=32", "context.dim=32", "trainer.device=cpu",
        "trainer.log_every=1", "trainer.val_every=0", "trainer.checkpoint_every=0",
        "trainer.progress=false", "trainer.tensorboard=false",
    ]
    preset = {
        "name": "tiny",
        "description": "two short runs",
        "budget_seconds": 4.8,  # 0.2 s windows: 6 steps at batch 4, 3 at batch 8
        "base_overrides": data,
        "step_fractions": {"optim.warmup_steps": 0.5},
        "runs": [
            {"name": "cpc", "overrides": ["objective=cpc", "data.batch_size=4",
                                          "objective.num_steps=4", "objective.num_negatives=16"]},
            {"name": "rpc", "overrides": ["objective=rpc", "data.batch_size=8",
                                          "objective.num_steps=4", "objective.num_negatives=16"]},
        ],
        "columns": ["run", {"objective": "choice:objective"},
                    {"batch": "config:data.batch_size"}, "steps", "final_loss", "loss_cv",
                    "probe_phone", "probe_speaker", {"mi": "metric:mi_bound"}],
        "plots": [{"metric": "loss", "panels": "choice:objective", "smooth": 2},
                  {"metric": "mi_bound"}],
        "probe": {"train_utterances": 24, "test_utterances": 8, "epochs": 2,
                  "speaker_epochs": 5},
        "baselines": ["log-mel"],
    }
    OmegaConf.save(OmegaConf.create(preset), path)
    return path


@pytest.mark.slow
def test_two_short_runs_write_table_plot_and_json_line(tiny_corpus, tmp_path, capsys):
    preset = tiny_preset(tiny_corpus, tmp_path / "tiny.yaml")
    out = tmp_path / "out"
    main = compare_command
    figures = main([str(preset), "--out", str(out)])
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last_line) == json.loads(json.dumps(figures))

    rows = figures["rows"]
    assert [r["run"] for r in rows] == ["cpc", "rpc", "log-mel"]
    assert [r["objective"] for r in rows] == ["cpc", "rpc", None]
    assert [r["batch"] for r in rows] == [4, 8, None]
    assert [r["steps"] for r in rows[:2]] == [6, 3]
    for row in rows:
        assert 0 <= row["probe_phone"] <= 1 and 0 <= row["probe_speaker"] <= 1
    for row in rows[:2]:
        assert math.isfinite(row["final_loss"]) and row["mi"] is not None

    table = (out / "table.md").read_text()
    assert table.startswith("# tiny: 4.8 audio seconds per run\n\ntwo short runs\n")
    assert table.count("\n| ") == 4  # header and three rows
    png = (out / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    logged = (out / "rpc" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in logged]
    assert steps == [1, 2, 3]

    # A second call reuses the finished runs instead of training them again.
    finished = [out / "cpc" / "metrics.jsonl", out / "baseline-log-mel.json"]
    before = [path.stat().st_mtime_ns for path in finished]
    again = main([str(preset), "--out", str(out), "--max-runs", "1"])
    assert [path.stat().st_mtime_ns for path in finished] == before
    assert [r["run"] for r in again["rows"]] == ["cpc", "log-mel"]
    assert again["rows"][0]["final_loss"] == rows[0]["final_loss"]
    # Without matplotlib the table and summary are still written, and the plot is skipped.
    (out / "curves.png").unlink()
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "matplotlib", None)
        no_plots = main([str(preset), "--out", str(out), "--max-runs", "1"])
    assert no_plots["plot"] is None and not (out / "curves.png").exists()
    assert (out / "table.md").read_text().count("\n| ") == 3
    # A different budget in the same directory is refused, not silently mixed.
    with pytest.raises(ValueError, match="holds a run with other overrides"):
        main([str(preset), "--out", str(out), "--max-runs", "1", "--budget-seconds", "9.6"])


# ------------------------------------------------------------------ the shipped presets
SHIPPED = shipped_presets()


def test_every_preset_is_shipped_and_tested():
    assert SHIPPED == ["mgf_ablation", "rpc_batch", "trinet_collapse"]
    assert PRESETS_DIR.parent.name == "studies"  # package data, not a training config group
    assert not (REPO / "configs" / "compare").exists()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_preset_composes_every_run_on_equal_audio(name, tmp_path):
    preset = load_preset(name)
    seconds = set()
    for spec in preset.runs:
        overrides, steps, per_step = plan_run(preset, spec, tmp_path)
        cfg, _ = compose_run(overrides)
        assert int(cfg.trainer.max_steps) == steps
        seconds.add(round(steps * per_step, 6))
    assert seconds == {preset.budget_seconds}
    headers = {spec for _, spec in preset.columns}
    assert {"probe_phone", "probe_speaker"} <= headers
    assert preset.probe.phone and preset.probe.speaker


def test_mgf_ablation_runs_all_scales_each_alone_and_each_pair(tmp_path):
    preset = load_preset("mgf_ablation")
    scales = ("frame", "phone", "utt")
    defaults = OmegaConf.load(REPO / "configs" / "objective" / "mgf.yaml")
    default_weights = {s: float(defaults[f"{s}_weight"]) for s in scales}
    assert all(w > 0 for w in default_weights.values())
    active = {}
    for spec in preset.runs:
        cfg, choices = compose_run(plan_run(preset, spec, tmp_path)[0])
        assert choices["objective"] == "mgf"
        weights = {s: float(cfg.objective[f"{s}_weight"]) for s in scales}
        # Each scale is either off or at the objective config's own weight.
        assert all(weights[s] in (0.0, default_weights[s]) for s in scales)
        on = frozenset(s for s in scales if weights[s] > 0)
        assert spec.name == "+".join(s for s in scales if s in on)  # the name says the scales
        active[on] = spec.name
    subsets = {frozenset(c) for r in (1, 2, 3) for c in itertools.combinations(scales, r)}
    assert set(active) == subsets and len(preset.runs) == 7


def test_trinet_collapse_compares_trinet_with_its_ema_only_variant(tmp_path):
    preset = load_preset("trinet_collapse")
    configs = {spec.name: compose_run(plan_run(preset, spec, tmp_path)[0])[0]
               for spec in preset.runs}
    assert set(configs) == {"trinet", "ema-only"}
    trinet, ema_only = configs["trinet"].objective, configs["ema-only"].objective
    assert float(trinet.class_weight) > 0 and float(ema_only.class_weight) == 0
    assert float(trinet.regression_weight) == float(ema_only.regression_weight) > 0
    for cfg in configs.values():
        assert cfg.objective._target_.endswith("TriNet")
        assert int(cfg.trainer.diagnostics_every) > 0  # collapse metrics over the run
        assert int(cfg.trainer.diagnostics_every) < int(cfg.trainer.max_steps) // 5
    metrics = {spec.split(":", 1)[1] for _, spec in preset.columns if spec.startswith("metric:")}
    for feature in ("predictions", "targets"):
        assert {f"diag/{feature}/std", f"diag/{feature}/effective_rank"} <= metrics
    assert "diag/predicted_classes/usage_entropy" in metrics
    assert any(p["metric"].endswith("effective_rank") for p in preset.plots)
    # Both variants train the penultimate layer: the probes read it.
    assert preset.probe.layer == "context.-2"


def tiny_data(root: Path) -> list[str]:
    return [
        "data=librispeech", f"data.root={root}", f"data.alignments={root}/alignments.txt",
        "data.train_split=train", "data.dev_split=dev", "data.window=3200",
        "data.num_workers=0", "data.in_memory=true", "encoder.dim=32", "context.dim=32",
        "trainer.device=cpu", "trainer.log_every=1",
    ]


TINY = {  # per preset: overrides that shrink its models, and the audio seconds per run
    "rpc_batch": (["objective.num_steps=4", "objective.num_negatives=16"], 6.4),
    "mgf_ablation": (["encoder.n_mels=20", "encoder.hidden=32", "context.num_layers=1",
                      "context.num_heads=2", "context.ffn_dim=64", "objective.mask_span=5",
                      "objective.min_unmasked=5", "objective.n_mels=20",
                      "objective.frame_hidden=16", "objective.utt_crop=8", "objective.utt_gap=2",
                      "objective.utt_hidden=16", "objective.utt_proj_dim=8"], 4.8),
    "trinet_collapse": (["context.num_layers=3", "context.num_heads=2", "context.ffn_dim=64",
                         "objective.top_k=2", "objective.mask_span=4",
                         "objective.min_unmasked=4", "objective.num_classes=8",
                         "trainer.diagnostics_every=2", "trainer.diagnostics_steps=2"], 9.6),
}


def run_tiny(name: str, root: Path, out: Path) -> dict:
    """The shipped preset's runs, columns and plots on tiny models, audio and probes."""
    preset = load_preset(name)
    probe = replace(preset.probe, train_utterances=24, test_utterances=8, epochs=2,
                    speaker_epochs=5)
    overrides, budget = TINY[name]
    return run_preset(replace(preset, probe=probe), out, budget_seconds=budget,
                      extra_overrides=[*tiny_data(root), *overrides])


def check_rows(result: dict, names: list[str]) -> list[dict]:
    rows = result["rows"]
    assert [r["run"] for r in rows] == [*names, "log-mel", "untrained"]
    for row in rows:
        assert 0 <= row["probe_phone"] <= 1 and 0 <= row["probe_speaker"] <= 1, row["run"]
    for row in rows[: len(names)]:
        assert math.isfinite(row["final_loss"]), row["run"]
    assert Path(result["plot"]).read_bytes()[:4] == b"\x89PNG"
    return rows[: len(names)]


@pytest.mark.slow
def test_tiny_rpc_batch_runs(tiny_corpus, tmp_path):
    result = run_tiny("rpc_batch", tiny_corpus, tmp_path)
    rows = check_rows(result, [s.name for s in load_preset("rpc_batch").runs])
    assert [r["steps"] for r in rows] == [8, 4, 2] * 2  # 6.4 s at batches 4, 8, 16
    for row in rows:
        assert math.isfinite(row["metrics"]["mi_bound"]), row["run"]
    table = Path(result["table"]).read_text()
    assert "| mi_bound |" in table and "| phone probe | speaker probe |" in table


@pytest.mark.slow
def test_tiny_mgf_ablation_runs(tiny_corpus, tmp_path):
    result = run_tiny("mgf_ablation", tiny_corpus, tmp_path)
    preset = load_preset("mgf_ablation")
    rows = check_rows(result, [s.name for s in preset.runs])
    for row in rows:
        on = set(row["run"].split("+"))
        for scale in ("frame", "phone", "utt"):
            logged = f"loss/{scale}" in row["metrics"]
            assert logged == (scale in on), (row["run"], scale)
    table = Path(result["table"]).read_text()
    assert table.count("\n| ") == 1 + 7 + 2  # header, runs, baselines


@pytest.mark.slow
def test_tiny_trinet_collapse_runs(tiny_corpus, tmp_path):
    result = run_tiny("trinet_collapse", tiny_corpus, tmp_path)
    trinet, ema_only = check_rows(result, ["trinet", "ema-only"])
    for row in (trinet, ema_only):
        for name in ("predictions", "targets", "penultimate"):
            assert row["metrics"][f"diag/{name}/effective_rank"] >= 1, (row["run"], name)
        # The collapse metrics are logged over the run, not once.
        diag_steps = [r["step"] for r in map(json.loads, (Path(row["run_dir"]) /
                      "metrics.jsonl").read_text().splitlines())
                      if "diag/predictions/effective_rank" in r]
        assert diag_steps == [2, 4, 6]
    assert "diag/predicted_classes/usage_entropy" in trinet["metrics"]
    assert "diag/predicted_classes/usage_entropy" not in ema_only["metrics"]
    assert "loss/class" not in ema_only["metrics"]
