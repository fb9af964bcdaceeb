"""Shared by the benchmarks: the machine's measured fp32 GEMM ceiling."""

from __future__ import annotations

import time

import torch


def gemm_peak(n: int = 2048, reps: int = 10) -> float:
    """Measured fp32 GFLOP/s of an n x n matmul: the ceiling every benchmark is compared to."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def cpu_features() -> dict:
    """The CPU's model name and the SIMD features that decide these numbers (Linux /proc/cpuinfo)."""
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16")
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return {}
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    return {"model": model, "features": [f for f in wanted if f in flags], "torch_capability": _capability()}


def _capability() -> str:
    try:
        return torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        return "unknown"
