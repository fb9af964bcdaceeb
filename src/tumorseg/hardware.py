"""What the machine computes natively: CPU fields from /proc/cpuinfo, bf16 support."""

from __future__ import annotations

import os
import platform

import torch


def cpuinfo() -> dict[str, str]:
    """The first CPU's /proc/cpuinfo fields ("model name", "flags", ...); {} where unreadable."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in lines:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity where the OS reports one (a container's
    or `taskset`'s limit), else all of the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively: a GPU that supports it, or a CPU with
    AVX512-BF16 or AMX (elsewhere the CPU emulates bf16, about 100x slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool({"avx512_bf16", "amx_bf16"} & set(simd_features()))


SIMD_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16")


def simd_features(fields: dict[str, str] | None = None) -> list[str]:
    """Which of the SIMD features that decide CPU speed here the CPU has (from /proc/cpuinfo)."""
    flags = (cpuinfo() if fields is None else fields).get("flags", "").split()
    return [f for f in SIMD_FEATURES if f in flags]


def machine(device: torch.device) -> dict[str, str | int | list[str]]:
    """What a timing was measured on: CPU model and SIMD features, cores, torch threads and
    version, device. CPUs sold under one model name can differ 2x in speed; the features tell some apart."""
    fields = cpuinfo()
    name = fields.get("model name") or platform.processor() or platform.machine()
    if device.type == "cuda":
        name += f"; {torch.cuda.get_device_name(device)}"
    return {"cpu": name, "features": simd_features(fields), "cores": os.cpu_count() or 1,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "device": device.type}  # fmt: skip
