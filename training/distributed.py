"""Data-parallel training with ``torchrun`` (PyTorch DDP), initialised from the environment.

``torchrun --nproc_per_node=N -m training.cli train --config ...`` starts N
processes with ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set; each trains on
its share of every epoch (a ``DistributedSampler``) and gradients are averaged.
NCCL is used on CUDA, gloo on CPU. Only rank 0 validates, logs and writes
checkpoints; its decisions (early stop, the learning-rate schedule's state)
are broadcast to the others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "barrier",
    "broadcast",
    "init_distributed",
    "mean_over_ranks",
    "shutdown",
    "sum_over_ranks",
]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (``world_size`` 1 when not distributed)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(use_cuda: bool) -> DistInfo:
    """Join the process group when ``WORLD_SIZE > 1`` (set by torchrun), else a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://")
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size)


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op when not distributed)."""
    if info.enabled:
        dist.barrier()


def broadcast(info: DistInfo, value: Any) -> Any:
    """Rank 0's ``value`` on every process."""
    if not info.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_ranks(info: DistInfo, value: float) -> float:
    """The mean of ``value`` over all processes (each rank's own value when not distributed)."""
    if not info.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor.item()) / info.world_size


def sum_over_ranks(info: DistInfo, values: tuple[int, ...]) -> tuple[int, ...]:
    """Element-wise sums of integer ``values`` over all processes."""
    if not info.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.int64)
    dist.all_reduce(tensor)
    return tuple(int(v) for v in tensor.tolist())


def shutdown(info: DistInfo) -> None:
    """Leave the process group."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
