"""The benchmark's results: the machine they come from, their rows and their Markdown tables.

Every row records the date, versions, commit, the CPU model and (on CUDA) the GPU, so rows of
two machines are never read as one run: :func:`markdown_table` refuses them.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
from typing import Any

import torch

from ssl_speech.data.audio import SAMPLE_RATE


def machine_info(device: str, threads: int | None) -> dict[str, Any]:
    """Date, versions, commit and hardware, recorded with every result.

    ``machine`` is what the step ran on (the GPU's name on CUDA, else the CPU model);
    ``cpu_model`` is always recorded, as the host's CPU also shapes a GPU step's time.
    """
    cpu = _cpu_name()
    info = {
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "commit": _git_commit(),
        "device": device,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu,
        "machine": cpu,
        "gpu": None,
        # Other processes' load skews every absolute figure on a shared machine.
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = info["machine"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _git_commit() -> str | None:
    """The checkout's commit (``+dirty`` with uncommitted changes), or ``None`` outside one."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def result_rows(infos, times, matmul, data_info, data_rates, settings,
             matmul_cpu=()) -> list[dict[str, Any]]:
    machine = machine_info(settings.device, settings.threads)
    peak = statistics.median(matmul)
    cpu_peak = statistics.median(matmul_cpu) if matmul_cpu else None
    common = {"precision": settings.precision, "compile": settings.compile,
              "retain_freed_memory": settings.retain_freed_memory,
              "omp_wait_policy": settings.omp_wait_policy or os.environ.get("OMP_WAIT_POLICY"),
              **machine}
    rows = []
    for name, info in infos.items():
        step_s = statistics.median(times[name])
        flops = info["flops_per_step"]
        rows.append({
            "kind": "step", "case": name, **common, **info,
            "ms_per_step": 1e3 * step_s,
            "ms_per_step_min": 1e3 * min(times[name]),
            "ms_per_step_max": 1e3 * max(times[name]),
            "repeats": len(times[name]),
            "sequences_per_s": info["batch_size"] / step_s,
            "audio_s_per_s": info["batch_size"] * info["window"] / SAMPLE_RATE / step_s,
            "peak_memory_mb": info["peak_memory_bytes"] / 2**20,
            "memory_kind": "cuda_max_allocated" if settings.device.startswith("cuda")
            else "rss_peak",
            "achieved_flops": flops / step_s,
            "matmul_flops": peak,
            "fraction_of_matmul": flops / step_s / peak,
            **_phase_figures(info, peak, cpu_peak),
        })
    if data_rates:
        rate = statistics.median(data_rates)
        consumed = max((r["sequences_per_s"] for r in rows), default=float("nan"))
        rows.append({"kind": "data", "case": "data pipeline", **common, **data_info,
                     "windows_per_s": rate, "repeats": len(data_rates),
                     "peak_memory_mb": data_info["peak_memory_bytes"] / 2**20,
                     "fastest_step_sequences_per_s": consumed,
                     "headroom": rate / consumed})
    rows.append({"kind": "matmul", "case": "matmul probe", **common,
                 "matmul_flops": peak, "matmul_flops_max": max(matmul),
                 "matmul_flops_per_cpu_s": cpu_peak,
                 "matmul_size": settings.matmul_size, "repeats": len(matmul)})
    return rows


def _phase_figures(info: dict[str, Any], matmul_flops: float,
                   matmul_flops_per_cpu_s: float | None = None) -> dict[str, Any]:
    """Per-phase milliseconds, share of the profiled step and fraction of the matmul rate, in
    wall time and (CPU, with the probe's rate per CPU second) in CPU time."""
    seconds = info.pop("phase_s", None)
    cpu_seconds = info.pop("phase_cpu_s", None)
    if seconds is None:
        return {}
    flops = info.get("phase_flops", {})

    def fractions(spent: dict[str, float], rate: float) -> dict[str, float]:
        return {name: flops.get(name, 0) / value / rate if value > 0 else 0.0
                for name, value in spent.items()}

    total = sum(seconds.values())
    out = {
        "phase_ms": {name: 1e3 * value for name, value in seconds.items()},
        "phase_share": {name: value / total for name, value in seconds.items()},
        "phase_fraction_of_matmul": fractions(seconds, matmul_flops),
        "profiled_ms_per_step": 1e3 * total,
    }
    if cpu_seconds is not None and matmul_flops_per_cpu_s:
        cpu_total = sum(cpu_seconds.values())
        out.update({
            "phase_cpu_ms": {name: 1e3 * value for name, value in cpu_seconds.items()},
            "phase_cpu_fraction_of_matmul": fractions(cpu_seconds, matmul_flops_per_cpu_s),
            "cpu_ms_per_step": 1e3 * cpu_total,
            "cpu_fraction_of_matmul": info["flops_per_step"] / cpu_total / matmul_flops_per_cpu_s,
        })
    return out


def _one_machine(rows: list[dict[str, Any]]) -> None:
    machines = {(r.get("machine"), r.get("cpu_model"), r.get("device")) for r in rows}
    if len(machines) > 1:
        raise ValueError(
            f"rows from {len(machines)} machines ({sorted(map(str, machines))}): a table "
            "compares cases of one run on one machine; tabulate each machine's rows apart")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown table (steps), followed by the data pipeline and the probe
    and, for profiled runs, a table of each case's phases. Rows must come from one machine."""
    _one_machine(rows)
    header = ("| case | objective | head | device | precision | batch | ms/step | seq/s "
              "| audio s/s | peak MB | params M | GFLOP/step | % of matmul |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        if r["kind"] != "step":
            continue
        lines.append(
            f"| {r['case']} | {r['objective']} | {r['head'] or '-'} | {r['device']} "
            f"| {r['precision']}{' compiled' if r['compile'] else ''} | {r['batch_size']} "
            f"| {r['ms_per_step']:.0f} | {r['sequences_per_s']:.2f} | {r['audio_s_per_s']:.1f} "
            f"| {r['peak_memory_mb']:.0f} | {r['parameters'] / 1e6:.2f} "
            f"| {r['flops_per_step'] / 1e9:.1f} | {100 * r['fraction_of_matmul']:.0f} |")
    for r in rows:
        if r["kind"] == "data":
            lines.append("")
            lines.append(f"Data pipeline: {r['windows_per_s']:.0f} windows/s "
                         f"({r['num_workers']} workers, window {r['window']}), "
                         f"{r['headroom']:.0f}x what the fastest step consumes.")
        elif r["kind"] == "matmul":
            lines.append("")
            load = r.get("load_average_1min")
            lines.append(f"Matmul probe ({r['matmul_size']}², precision {r['precision']}): "
                         f"{r['matmul_flops'] / 1e9:.0f} GFLOP/s median. {r['date']}"
                         + (f", commit {_short(r['commit'])}" if r.get("commit") else "")
                         + f", torch {r['torch']}"
                         + (f" (CUDA {r['cuda']})" if r.get("gpu") and r.get("cuda") else "")
                         + f", {r['threads']} threads, {r['machine']} "
                         f"({r['device']}, {r['cpu_count']} CPUs"
                         + (f" {r['cpu_model']}" if r.get("gpu") else "")
                         + (f", load average {load:.1f}" if load is not None else "")
                         + (f", OMP_WAIT_POLICY {r['omp_wait_policy'].lower()}"
                            if r.get("omp_wait_policy") else "")
                         + (", freed memory retained" if r.get("retain_freed_memory") else "")
                         + ").")
    lines += _phase_table(rows)
    return "\n".join(lines)


def _short(commit: str) -> str:
    return commit[:12] + ("+dirty" if commit.endswith("+dirty") else "")


def _phase_table(rows: list[dict[str, Any]]) -> list[str]:
    profiled = [r for r in rows if r["kind"] == "step" and "phase_ms" in r]
    if not profiled:
        return []
    with_cpu = all("phase_cpu_ms" in r for r in profiled)
    header = "| case | phase | ms | % of profiled step | % of matmul |"
    if with_cpu:
        header += " CPU ms | % of CPU time | % of matmul per CPU s |"
    lines = ["", header, "|" + "---|" * (header.count("|") - 1)]
    for r in profiled:
        cpu_total = sum(r["phase_cpu_ms"].values()) if with_cpu else 0.0
        for name, ms in r["phase_ms"].items():
            line = (f"| {r['case']} | {name} | {ms:.1f} | {100 * r['phase_share'][name]:.0f} "
                    f"| {100 * r['phase_fraction_of_matmul'][name]:.0f} |")
            if with_cpu:
                cpu = r["phase_cpu_ms"][name]
                line += (f" {cpu:.1f} | {100 * cpu / cpu_total:.0f} "
                         f"| {100 * r['phase_cpu_fraction_of_matmul'][name]:.0f} |")
            lines.append(line)
        if with_cpu:
            lines.append(f"| {r['case']} | whole step | {r['profiled_ms_per_step']:.1f} | 100 "
                         f"| {100 * r['fraction_of_matmul']:.0f} | {cpu_total:.1f} | 100 "
                         f"| {100 * r['cpu_fraction_of_matmul']:.0f} |")
    return lines
