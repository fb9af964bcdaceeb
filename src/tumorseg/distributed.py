"""DistributedDataParallel under torchrun: process group setup and small helpers.

`torchrun` sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous; without them training
runs in one process and every helper here is a no-op.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from .errors import TumorsegError

_T = TypeVar("_T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    # where collectives run: NCCL takes only CUDA tensors, gloo CPU ones
    device: str = "cpu"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def launched_world_size() -> int:
    """The processes torchrun launched (WORLD_SIZE), known before the process group is joined; 1 alone."""
    return int(os.environ["WORLD_SIZE"]) if launched_by_torchrun() else 1


def check_launch() -> None:
    """Refuse RANK and WORLD_SIZE set by hand without the rendezvous address torchrun also sets
    (once a ValueError traceback from init_process_group, after the run folder was made)."""
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if launched_by_torchrun() and not dist.is_initialized() and missing:
        raise TumorsegError(f"RANK and WORLD_SIZE are set but {' and '.join(missing)} not: launch with torchrun "
                            "(it sets them all), or set MASTER_ADDR and MASTER_PORT to rank 0's address and a "
                            "free port")  # fmt: skip


WAIT_NOTE_S = 10.0  # joining the process group longer than this is said: it otherwise waits 30 min in silence


def setup(device_kind: str) -> DistInfo:
    """Join the process group torchrun set up (NCCL on GPUs, gloo on CPUs); no-op otherwise."""
    if not launched_by_torchrun():
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    info = DistInfo(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=local_rank,
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
        device=f"cuda:{local_rank}" if device_kind == "cuda" else "cpu",
    )
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(info.local_rank)
        where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        note = threading.Timer(WAIT_NOTE_S, lambda: print(
            f"rank {info.rank}: still waiting for all {info.world_size} processes to join at {where} (PyTorch "
            "gives up after 30 min): is every node's torchrun started, with the same --nnodes and endpoint?",
            file=sys.stderr, flush=True))  # fmt: skip
        note.daemon = True
        note.start()
        try:
            dist.init_process_group(backend=backend)
        finally:
            note.cancel()
    return info


def cleanup() -> None:
    """Leave the process group while the interpreter is fully alive.

    On rank 0 the DistributedDataParallel wrapper sits in a reference cycle, so without a
    collection it (and the process group its reducer holds) outlives `destroy_process_group`,
    possibly until interpreter shutdown. There gloo can abort the process (SIGABRT), the likely
    cause of a rare failed exit. Collecting first frees the wrapper.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum `t` over all ranks (in place on a copy); identity in one process."""
    if not info.enabled:
        return t
    out = t.to(info.device, copy=True)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(t.device)


def max_over_ranks(value: int, info: DistInfo) -> int:
    """The largest of every rank's `value`; `value` itself in one process."""
    if not info.enabled:
        return value
    t = torch.tensor([int(value)], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def broadcast_object(obj: _T, info: DistInfo) -> _T:
    """Rank 0's `obj` on every rank (picklable; only ever this process group's own objects)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def ranks_unlike_rank0(value: Any, info: DistInfo) -> list[tuple[int, str]]:
    """(rank, host) of each rank whose picklable `value` differs from rank 0's; [] in one process."""
    if not info.enabled:
        return []
    import socket

    values: list = [None] * info.world_size
    dist.all_gather_object(values, (value, socket.gethostname()))
    return [(r, host) for r, (v, host) in enumerate(values) if v != values[0][0]]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


@torch.no_grad()
def average_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Average floating-point buffers (batch-norm running statistics) over ranks, in place.

    Each rank updates its own running statistics from its share of the batch; averaging
    them at the end of an epoch gives every rank, and so every checkpoint, the same model.
    """
    if not info.enabled:
        return
    for buf in module.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf.div_(info.world_size)


def uses_cuda(device: str) -> bool:
    """Whether the --device option (`auto`, `cpu` or `cuda`) trains on CUDA here."""
    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


def train_device(device: str, info: DistInfo) -> torch.device:
    """The device this process trains on: under torchrun with CUDA, its local rank's GPU."""
    if not uses_cuda(device):
        return torch.device("cpu")
    return torch.device("cuda", info.local_rank if info.enabled else torch.cuda.current_device())
