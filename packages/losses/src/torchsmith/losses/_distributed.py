"""All-gather with a correct gradient, for losses that use negatives from every rank.

The backward of a gather must *sum* the gradient each rank computed for a slice before
returning that slice (lightly #1528 returned only the local one). With every rank's loss
averaged over its own anchors and DDP averaging parameter gradients, training then equals
one process on the concatenated batch. Losses that need statistics of the whole batch
(VICReg, Barlow Twins) gather embeddings through this function too, never an all_reduce
outside autograd (lightly #1977).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

__all__ = ["all_reduce_sum", "gather", "rank", "world_size"]


def world_size() -> int:
    """Ranks in the default process group, 1 when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def rank() -> int:
    """This process's rank, 0 when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        # Each rank holds d(its loss)/d(every slice); the slice's total gradient is the sum.
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad.chunk(dist.get_world_size(), dim=0)[dist.get_rank()]


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0 (rank order), keeping gradients.

    Every rank must pass the same shape. Without an initialised process group this
    returns ``x`` itself.
    """
    if world_size() == 1:
        return x
    out: torch.Tensor = _AllGather.apply(x)
    return out


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over ranks, in place and without gradient (counts, not activations)."""
    if world_size() > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x
