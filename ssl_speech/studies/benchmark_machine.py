"""What the benchmark measures of the machine itself: the matrix-product rate a step is held
against, peak memory, the allocator and OpenMP settings of the worker processes."""

from __future__ import annotations

import ctypes
import sys
import time

import torch

_DTYPES = {"32": torch.float32, "bf16": torch.bfloat16, "16": torch.float16}


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of unmapping it (Linux only).

    A training step allocates and frees the same large activation buffers every time. glibc
    serves each large request with a fresh ``mmap`` and unmaps it on free, so every step
    page-faults and zero-fills its activations again (measured: about 95 000 page faults per
    forward and backward of the CPC encoder at batch 8). With ``M_MMAP_MAX = 0`` large blocks
    come from the heap, and a huge ``M_TRIM_THRESHOLD`` keeps the heap from being returned, so
    later steps reuse warm pages. Resident memory then stays at its high-water mark. Returns
    whether the setting was applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 62))


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: ``max_memory_allocated``; CPU: the process's peak resident set size (VmHWM)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource  # not on Windows; ru_maxrss is in kilobytes on Linux, bytes on macOS

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_throughput(device: torch.device | str, precision: str = "32", size: int = 2048,
                      repeats: int = 3, min_seconds: float = 0.2, clock=time.perf_counter,
                      ) -> float:
    """Measured FLOP/s of ``size × size`` matrix products in ``precision``: the device's
    attainable rate for dense work. Each of ``repeats`` measurements runs back-to-back products
    for at least ``min_seconds`` (one product on a CPU, many on a GPU); the best one counts.
    ``clock=time.process_time`` gives FLOPs per CPU second of the process's threads instead
    (CPU only), the rate to set a profile's CPU seconds against."""
    device = torch.device(device)
    dtype = _DTYPES[str(precision)]
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        _synchronize(device)
        start, count = clock(), 0
        while True:
            torch.mm(a, b)
            count += 1
            if count & (count - 1) == 0:  # check the clock at powers of two: few syncs
                _synchronize(device)
                elapsed = clock() - start
                if elapsed >= min_seconds:
                    break
        best = max(best, 2.0 * size**3 * count / elapsed)
    return best


# ------------------------------------------------------------------------ one case


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        marker in text for marker in ("out of memory", "ALLOC_FAILED", "NOT_ENOUGH_WORKSPACE"))
