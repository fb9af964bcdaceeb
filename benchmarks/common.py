"""Shared by the benchmarks: the machine's measured fp32 GEMM ceiling."""

from __future__ import annotations

import time

import torch

from tumorseg.hardware import cpuinfo, simd_features


def gemm_peak(n: int = 2048, reps: int = 4, trials: int = 7) -> float:
    """Measured fp32 GFLOP/s of an n x n matmul: the ceiling every benchmark is compared to.

    The best of `trials` timings of `reps` matmuls: on a shared machine a single timing can
    catch a neighbour's burst and understate the ceiling (one run here measured 76 GFLOP/s
    against 157-170 in the others)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(trials):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t) / 1e9)
    return best


def cpu_features() -> dict:
    """The CPU's model name and the SIMD features that decide these numbers (Linux /proc/cpuinfo)."""
    fields = cpuinfo()
    if not fields:
        return {}
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")()
    return {"model": fields.get("model name", ""), "features": simd_features(fields), "torch_capability": capability}


def cpu_line(cpu: dict) -> str:
    return f"CPU: {cpu.get('model')}; {' '.join(cpu.get('features', []))}; torch {cpu.get('torch_capability')}"
