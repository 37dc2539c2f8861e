"""DDP under torchrun: read the environment, start the process group, reduce values."""

from __future__ import annotations

import gc
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from torchsmith.interfaces import ConfigError


@dataclass(frozen=True)
class Dist:
    """Where this process stands: rank 0 of 1 when not launched by torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> Dist:
    """Join the torchrun process group (gloo on CPU, nccl on CUDA) if WORLD_SIZE > 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":  # before the group starts, so nccl binds this rank's GPU
        visible = torch.cuda.device_count()
        if local_rank >= visible:
            raise ConfigError(
                f"training.device: 'cuda' gives each process its own GPU, but LOCAL_RANK is "
                f"{local_rank} and {visible} GPU(s) are visible; start at most {visible} "
                "processes per node, or train on the CPU with training.device='cpu' (gloo)"
            )
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        # device_id binds the GPU at once, so nccl's barrier need not guess which one it is.
        bound = torch.device("cuda", local_rank) if device_type == "cuda" else None
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", device_id=bound)
        _JOINED.append(dist.group.WORLD)
    return Dist(rank, world_size, local_rank)


_JOINED: list[Any] = []  # the process group init_distributed started, if it did


def shutdown() -> None:
    """Leave the process group init_distributed started (a caller's own group stays), on
    success and on error: a rank exiting without it aborts, and torchrun reports the abort
    as the cause, not the rank's error."""
    if _JOINED and dist.is_initialized() and dist.group.WORLD is _JOINED[0]:
        # A run's DDP model holds the group, often from a reference cycle: collected now,
        # not while the interpreter shuts down, when freeing it aborts a rank (SIGABRT,
        # "terminate called without an active exception") and fails a finished run.
        gc.collect()
        try:
            dist.destroy_process_group()
        except Exception as exc:  # never hide the run's own outcome behind this one
            warnings.warn(f"leaving the process group failed: {exc!r}", stacklevel=2)
    _JOINED.clear()


def wrap_ddp(model: nn.Module, info: Dist, device: torch.device) -> nn.Module:
    if not info.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DDP and torch.compile wrappers."""
    inner: Any = model
    while True:
        if isinstance(inner, nn.parallel.DistributedDataParallel):
            inner = inner.module
        elif hasattr(inner, "_orig_mod"):
            inner = inner._orig_mod
        else:
            return inner  # type: ignore[no-any-return]


def for_evaluation(model: nn.Module, info: Dist) -> nn.Module:
    """The module to evaluate under DDP: the one inside the wrapper, with rank 0's buffers.

    DDP's own forward is a collective (it broadcasts buffers first), and evaluation splits
    batches across ranks, so a rank with no batch would leave the others waiting in it.
    The broadcast happens here instead, on every rank, so each evaluates rank 0's running
    statistics, as DDP's forward would have made it.
    """
    if not isinstance(model, nn.parallel.DistributedDataParallel):
        return model
    inner: nn.Module = model.module
    if model.broadcast_buffers:  # as DDP's forward would; without it, buffers stay per rank
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for buffer in inner.buffers():
            by_dtype.setdefault(buffer.dtype, []).append(buffer)
        for buffers in by_dtype.values():  # one broadcast a dtype, not one a buffer
            flat = torch.cat([b.detach().reshape(-1) for b in buffers])
            dist.broadcast(flat, src=0)
            parts = torch.split(flat, [b.numel() for b in buffers])
            for b, part in zip(buffers, parts, strict=True):
                b.data.copy_(part.view_as(b))
    return inner


def all_reduce_sum(value: torch.Tensor, info: Dist) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def gather_objects(obj: Any, info: Dist) -> list[Any]:
    """``obj`` from every rank (our own processes: pickling between them is trusted)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: Dist) -> None:
    if info.enabled:
        dist.barrier()
