"""Distributed data-parallel training under ``torchrun`` (one process per device).

``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` (and the rendezvous address); without them a
run is a single process and every helper here is a no-op. The process group uses NCCL on CUDA and Gloo
on the CPU. Only rank 0 logs, evaluates and writes files; decisions it takes (early stop) are broadcast.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from yolocompress.errors import InputError


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env() -> DistContext:
    """Read ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` as set by ``torchrun`` (a single process without them)."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", 1))
        rank = int(os.environ.get("RANK", 0))
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError as exc:
        raise InputError(f"bad torchrun environment: {exc}") from exc
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world_size}")
    return DistContext(rank, local_rank, world_size)


def resolve_device(device: str, ctx: DistContext) -> torch.device:
    """The device of this process: ``cpu``, ``cuda:N``, or under torchrun with ``cuda`` the local GPU."""
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"bad device {device!r}: use cpu, cuda or cuda:N") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} requested but CUDA is not available")
        if ctx.distributed:
            dev = torch.device("cuda", ctx.local_rank)  # one GPU per process
        elif dev.index is None:
            dev = torch.device("cuda", 0)
        if dev.index >= torch.cuda.device_count():
            raise InputError(f"device {dev} requested but only {torch.cuda.device_count()} GPU(s) are visible")
        torch.cuda.set_device(dev)
    elif dev.type != "cpu":
        raise InputError(f"unsupported device {device!r}: use cpu, cuda or cuda:N")
    return dev


def init_process_group(ctx: DistContext, device: torch.device, timeout_s: float = 3 * 3600) -> bool:
    """Join the process group if this is a distributed run not yet initialised; returns whether it did.

    The timeout is long because the other ranks wait while rank 0 alone validates a whole data set.
    """
    if not ctx.distributed or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s),
                            rank=ctx.rank, world_size=ctx.world_size)
    return True


def destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if _active():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable plain data)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in a single process)."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_true(flag: torch.Tensor) -> bool:
    """Whether the boolean ``flag`` (a 0-d tensor on this process's device) holds on every rank; one
    all-reduce in a distributed run, so that every rank takes the same branch (and none waits alone)."""
    if not _active():
        return bool(flag)
    value = flag.to(torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value)


def wrap_ddp(model: nn.Module, device: torch.device, sync_bn: bool = False) -> nn.Module:
    """Wrap ``model`` in ``DistributedDataParallel`` (optionally converting BatchNorm to SyncBatchNorm).

    DDP broadcasts rank 0's parameters and buffers at construction, so every rank starts identical.
    """
    if sync_bn:
        if device.type != "cuda":
            raise InputError("SyncBatchNorm needs CUDA devices")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, output_device=device_ids[0]
                                               if device_ids else None)
