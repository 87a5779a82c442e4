"""The benchmark: its FLOP count on a known case, its settings, and the script's output format.

Nothing here times anything: the figures depend on the machine and its load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssl_speech.data.batch import Batch
from ssl_speech.nn.context import LSTMContext
from ssl_speech.nn.encoders import CPCEncoder
from ssl_speech.nn.model import SSLModel
from ssl_speech.objectives.cpc import CPC
from ssl_speech.studies.benchmark import (
    PRESETS,
    BenchmarkSettings,
    _is_out_of_memory,
    cases_for,
    count_step_flops,
    machine_info,
    markdown_table,
    worker_environment,
)
from ssl_speech.studies.step_flops import extra_flop_formulas
from ssl_speech.studies.step_phases import PHASES, PhaseClock, phase_flops
from ssl_speech.train.trainer import TrainModule

ROOT = Path(__file__).resolve().parents[2]


def cpc_step_flops(B: int, S: int, D: int, H: int, K: int, N: int) -> int:
    """Hand count for CPC encoder + one LSTM layer + linear heads + CPC scores.

    Forward FLOPs of each product, times 3 for training (the backward computes the input's and
    the weights' gradients, each as costly as the forward), except the first convolution,
    whose input (the audio) needs no gradient. Scores: each prediction times its K + N
    candidates.
    """
    total, length, channels = 0, S, 1
    for kernel, stride, padding in CPCEncoder.LAYERS:
        length = (length + 2 * padding - kernel) // stride + 1
        forward = 2 * B * length * D * channels * kernel
        total += forward * (2 if channels == 1 else 3)
        channels = D
    T = S // 160
    A = T - K
    total += 3 * 2 * B * T * 4 * H * (D + H)  # LSTM: 4 gates, input and recurrent weights
    total += 3 * 2 * B * A * H * K * D  # K linear heads on the A anchors
    total += 3 * 2 * B * A * K * (K + N) * D  # scores against the window and the negatives
    return total


@pytest.mark.parametrize("method", ["gather", "dense"])
def test_flop_count_of_a_known_case(method: str) -> None:
    torch.manual_seed(0)
    B, S, D, H, K, N = 3, 3200, 16, 24, 4, 10
    model = SSLModel(CPCEncoder(dim=D), LSTMContext(D, dim=H))
    objective = CPC(dim=D, context_dim=H, num_steps=K, num_negatives=N, head="linear",
                    score_method=method)
    batch = Batch(wav=torch.randn(B, 1, S), speaker=torch.zeros(B, dtype=torch.long))
    flops = count_step_flops(TrainModule(model, objective), batch)
    # Whichever method runs, the scores count as the gather form's arithmetic.
    assert flops == cpc_step_flops(B, S, D, H, K, N)
    assert objective.core.score_method == method  # restored after counting


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="precision='8'"):
        BenchmarkSettings(precision="8")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        BenchmarkSettings(precision="16", device="cpu")
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        BenchmarkSettings(repeats=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        BenchmarkSettings(batch_size=0)
    with pytest.raises(ValueError, match="omp_wait_policy='sleepy'"):
        BenchmarkSettings(omp_wait_policy="sleepy")


def test_worker_environment_sets_and_restores(monkeypatch) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    with worker_environment(BenchmarkSettings(omp_wait_policy="passive")) as wanted:
        assert wanted == {"OMP_WAIT_POLICY": "PASSIVE"}
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    with worker_environment(BenchmarkSettings(omp_wait_policy="active")):
        assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert "OMP_WAIT_POLICY" not in os.environ
    with worker_environment(BenchmarkSettings()) as wanted:  # None: inherit, set nothing
        assert wanted == {} and "OMP_WAIT_POLICY" not in os.environ


def test_cases_and_presets() -> None:
    cases = cases_for(["cpc", "acpc"], ["transformer", "linear"], ["cpc"], ["lstm"])
    assert list(cases) == ["cpc-transformer-cpc-lstm", "cpc-linear-cpc-lstm",
                           "acpc-transformer-cpc-lstm", "acpc-linear-cpc-lstm"]
    assert cases["acpc-linear-cpc-lstm"] == ("objective=acpc", "encoder=cpc", "context=lstm",
                                             "objective.head=linear")
    with pytest.raises(ValueError, match="no objective config 'cpcc'"):
        cases_for(["cpcc"], ["linear"], ["cpc"], ["lstm"])
    assert PRESETS["cpc_audio"]["cpc_audio"] == ("experiment=cpc_audio",)


def test_markdown_table_lists_steps_then_data_and_probe() -> None:
    common = {"precision": "32", "compile": False, "date": "2026-01-01", "torch": "2.x",
              "threads": 2, "machine": "cpu model", "device": "cpu", "cpu_count": 2,
              "load_average_1min": 1.5}
    rows = [
        {"kind": "step", "case": "a", "objective": "CPC", "head": "linear", "batch_size": 8,
         "ms_per_step": 1234.4, "sequences_per_s": 6.48, "audio_s_per_s": 8.3,
         "peak_memory_mb": 900.0, "parameters": 2_630_000, "flops_per_step": 47.4e9,
         "fraction_of_matmul": 0.5, **common},
        {"kind": "data", "case": "data pipeline", "windows_per_s": 4000.0, "num_workers": 0,
         "window": 20480, "headroom": 617.3, **common},
        {"kind": "matmul", "case": "matmul probe", "matmul_size": 2048,
         "matmul_flops": 150e9, **common},
    ]
    lines = markdown_table(rows).splitlines()
    assert lines[0].startswith("| case | objective | head | device | precision | batch |")
    assert lines[1] == "|" + "---|" * 13
    assert lines[2] == ("| a | CPC | linear | cpu | 32 | 8 | 1234 | 6.48 | 8.3 | 900 | 2.63 "
                        "| 47.4 | 50 |")
    assert "4000 windows/s" in lines[4] and "617x" in lines[4]
    assert "150 GFLOP/s" in lines[6] and "2 threads" in lines[6] and "load average 1.5" in lines[6]
    rows[-1]["omp_wait_policy"] = "PASSIVE"
    assert markdown_table(rows).splitlines()[6].endswith("OMP_WAIT_POLICY passive).")


@pytest.mark.slow
def test_script_runs_and_writes_table_and_json_lines(tiny_corpus, tmp_path) -> None:
    B, S, D, K, N = 4, 3200, 16, 4, 16
    overrides = ["data=librispeech", f"data.root={tiny_corpus}", "data.train_split=train",
                 "data.num_workers=0",
                 f"data.window={S}", f"encoder.dim={D}", f"context.dim={D}",
                 f"objective.num_steps={K}", f"objective.num_negatives={N}"]
    jsonl, markdown = tmp_path / "out.jsonl", tmp_path / "out.md"
    command = [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--objectives", "cpc",
               "--heads", "linear", "--batch-size", str(B), "--threads", "1", "--warmup", "1",
               "--repeats", "2", "--data-batches", "3", "--matmul-size", "64", "--quiet",
               "--omp-wait-policy", "passive",
               "--jsonl", str(jsonl), "--markdown", str(markdown)]
    for override in overrides:
        command += ["--override", override]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["step", "data", "matmul"]
    step, data, probe = rows
    assert step["case"] == "cpc-linear-cpc-lstm"
    assert (step["objective"], step["head"], step["batch_size"], step["window"]) == (
        "CPC", "linear", B, S)
    assert step["flops_per_step"] == cpc_step_flops(B, S, D, D, K, N)
    assert step["parameters"] > 0 and step["repeats"] == 2
    assert step["omp_wait_policy"] == "PASSIVE"  # reported by the case's own process
    assert step["ms_per_step_min"] <= step["ms_per_step"] <= step["ms_per_step_max"]
    assert step["sequences_per_s"] == pytest.approx(B / (step["ms_per_step"] / 1e3))
    assert step["audio_s_per_s"] == pytest.approx(step["sequences_per_s"] * S / 16000)
    assert step["fraction_of_matmul"] == pytest.approx(
        step["flops_per_step"] / (step["ms_per_step"] / 1e3) / probe["matmul_flops"])
    assert step["peak_memory_mb"] > 0 and step["memory_kind"] == "rss_peak"
    assert data["windows_per_s"] > 0 and data["window"] == S and data["num_workers"] == 0
    assert data["headroom"] == pytest.approx(data["windows_per_s"] / step["sequences_per_s"])
    assert probe["matmul_flops"] > 0 and probe["threads"] == 1
    table = markdown.read_text()
    assert table.startswith("| case | objective |") and "| cpc-linear-cpc-lstm | CPC |" in table
    assert table in done.stdout


def test_profile_and_batch_search_settings() -> None:
    with pytest.raises(ValueError, match="profile needs the uncompiled step"):
        BenchmarkSettings(profile=True, compile=True)
    with pytest.raises(ValueError, match="max_batch_size must be >= 1"):
        BenchmarkSettings(max_batch_size=0)
    with pytest.raises(ValueError, match="memory_headroom must be in"):
        BenchmarkSettings(memory_headroom=1.5)
    assert _is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory."))
    assert _is_out_of_memory(RuntimeError("CUBLAS_STATUS_ALLOC_FAILED when calling ..."))
    assert not _is_out_of_memory(RuntimeError("shape mismatch"))


def tiny_cpc_module(B: int, S: int, D: int, H: int, K: int, N: int):
    torch.manual_seed(0)
    model = SSLModel(CPCEncoder(dim=D), LSTMContext(D, dim=H))
    objective = CPC(dim=D, context_dim=H, num_steps=K, num_negatives=N, head="linear")
    batch = Batch(wav=torch.randn(B, 1, S), speaker=torch.zeros(B, dtype=torch.long))
    return TrainModule(model, objective), batch


def test_phase_flops_split_the_step_count() -> None:
    B, S, D, H, K, N = 3, 3200, 16, 24, 4, 10
    module, batch = tiny_cpc_module(B, S, D, H, K, N)
    step = count_step_flops(module, batch)
    phases = phase_flops(module, batch, step_flops=step, formulas=extra_flop_formulas())
    assert list(phases) == ["encoder", "context", "heads", "scores", "backward", "optimizer",
                            "other"]
    T, A = S // 160, S // 160 - K
    assert phases["context"] == 2 * B * T * 4 * H * (D + H)
    assert phases["heads"] == 2 * B * A * H * K * D
    assert phases["scores"] == 2 * B * A * K * (K + N) * D
    assert sum(phases.values()) == step == cpc_step_flops(B, S, D, H, K, N)


def test_phase_clock_accounts_for_the_whole_step() -> None:
    module, batch = tiny_cpc_module(2, 3200, 16, 16, 4, 8)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)

    def step() -> None:
        loss, _ = module(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    clock = PhaseClock(module, optimizer, torch.device("cpu"))
    totals = [clock.time_step(step) for _ in range(2)]
    phases = clock.mean_seconds()
    assert list(phases) == list(PHASES) and clock.steps == 2
    for name in ("encoder", "context", "heads", "scores", "backward", "optimizer"):
        assert phases[name] > 0, name
    assert phases["other"] >= -1e-6
    assert sum(phases.values()) == pytest.approx(sum(totals) / 2, rel=1e-6)
    cpu = clock.mean_cpu_seconds()  # the process's threads, in CPU seconds
    assert list(cpu) == list(PHASES) and sum(cpu.values()) > 0
    clock.detach()
    step()  # no hook left: nothing more is counted
    assert clock.mean_seconds() == phases


def step_row(**changes):
    row = {"kind": "step", "case": "a", "objective": "CPC", "head": "linear", "batch_size": 8,
           "ms_per_step": 100.0, "sequences_per_s": 80.0, "audio_s_per_s": 102.4,
           "peak_memory_mb": 900.0, "parameters": 2_630_000, "flops_per_step": 4e9,
           "fraction_of_matmul": 0.5, "precision": "32", "compile": False, "device": "cpu",
           "machine": "cpu model", "cpu_model": "cpu model"}
    return {**row, **changes}


def test_markdown_refuses_rows_of_two_machines_and_shows_phases() -> None:
    with pytest.raises(ValueError, match="rows from 2 machines"):
        markdown_table([step_row(), step_row(case="b", machine="other", cpu_model="other")])
    phases = {"phase_ms": {"encoder": 20.0, "backward": 80.0},
              "phase_share": {"encoder": 0.2, "backward": 0.8},
              "phase_fraction_of_matmul": {"encoder": 0.9, "backward": 0.7}}
    lines = markdown_table([step_row(**phases)]).splitlines()
    assert lines[-3:] == ["|---|---|---|---|---|", "| a | encoder | 20.0 | 20 | 90 |",
                          "| a | backward | 80.0 | 80 | 70 |"]


def test_machine_info_names_the_cpu_and_the_commit() -> None:
    info = machine_info("cpu", 2)
    assert info["cpu_model"] and info["machine"] == info["cpu_model"] and info["gpu"] is None
    assert info["threads"] == 2 and info["torch"] == torch.__version__
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    if commit:  # in a checkout
        assert info["commit"].split("+")[0] == commit


def test_largest_batch_stops_at_out_of_memory_headroom_or_bound(monkeypatch) -> None:
    from types import SimpleNamespace

    from ssl_speech.studies import benchmark

    def search(device: str, fits_below: int, max_batch: int, total: int | None = None):
        """Peak memory 100 MB per sequence; out of memory from ``fits_below`` sequences."""
        monkeypatch.setattr(benchmark, "_peak_at_batch", lambda spec, b: None
                            if b >= fits_below else b * 100 * 2**20)
        monkeypatch.setattr(torch.cuda, "get_device_properties",
                            lambda device: SimpleNamespace(total_memory=total))
        settings = BenchmarkSettings(device=device, batch_size=2, max_batch_size=max_batch)
        found, tried = benchmark.largest_batch(benchmark._CaseSpec("c", (), settings, "."))
        return found, [(t["batch_size"], t["peak_memory_mb"]) for t in tried]

    assert search("cpu", 10**6, 8) == (8, [(2, 200), (4, 400), (8, 800)])  # the bound
    assert search("cpu", 10**6, 12) == (12, [(2, 200), (4, 400), (8, 800), (12, 1200)])
    assert search("cuda", 16, 4096, total=10**12) == (
        8, [(2, 200), (4, 400), (8, 800), (16, None)])  # out of memory at 16
    # Headroom: 1600 MB is past 0.45 of the device's 2000 MB, so twice as many would not fit.
    assert search("cuda", 10**6, 4096, total=2000 * 2**20) == (
        16, [(2, 200), (4, 400), (8, 800), (16, 1600)])
    with pytest.raises(RuntimeError, match="batch 2 already runs out of memory"):
        search("cuda", 1, 4096, total=10**12)
