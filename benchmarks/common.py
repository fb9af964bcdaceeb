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
