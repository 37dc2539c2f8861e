"""Run by test_distributed.py in a fresh interpreter: 2 gloo ranks on CPU.

Each rank computes a loss with gather_distributed=True on its half of a batch through a
shared Linear layer, averages parameter gradients as DDP does, and saves what it got
next to the single-process result on the whole batch (computed on rank 0 and 1 alike).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from torchsmith.losses import _distributed, get_loss

WORLD, N, D = 2, 6, 5
CASES = {
    "clip": ("pair", {}),
    "clip_chunked": ("pair", {"name": "clip", "chunk_size": 2}),
    "siglip": ("pair", {}),
    "siglip_chunked": ("pair", {"name": "siglip", "chunk_size": 4}),
    "ntxent": ("pair", {}),
    "ntxent_chunked": ("pair", {"name": "ntxent", "chunk_size": 5}),
    "cross_modal": ("pair", {}),
    "vicreg": ("pair", {}),
    "barlow_twins": ("pair", {}),
    "supcon": ("labels", {}),
}


def _loss(case: str, distributed: bool) -> torch.nn.Module:
    kwargs = dict(CASES[case][1])
    name = str(kwargs.pop("name", case))
    return get_loss(name, gather_distributed=distributed, **kwargs).double()


def _run(case: str, x1: torch.Tensor, x2: torch.Tensor, labels: torch.Tensor, distributed: bool):
    torch.manual_seed(1)
    layer = torch.nn.Linear(D, D).double()
    x1, x2 = x1.clone().requires_grad_(), x2.clone().requires_grad_()
    loss_fn = _loss(case, distributed)
    if CASES[case][0] == "pair":
        value = loss_fn(layer(x1), layer(x2))
    else:
        value = loss_fn(layer(x1), labels)
    value.backward()
    return value.detach(), [p.grad for p in layer.parameters()], x1.grad


def _unsummed_backward(x1, x2, labels, part) -> dict[str, torch.Tensor]:
    """Negative control: a gather whose backward keeps only the local gradient (lightly
    #1528) must make the comparison fail, or the test above proves nothing."""
    original = _distributed._AllGather.backward

    def local_only(ctx, grad):  # type: ignore[no-untyped-def]
        return grad.chunk(WORLD, dim=0)[dist.get_rank()]

    _distributed._AllGather.backward = staticmethod(local_only)  # type: ignore[method-assign]
    try:
        _, grads, _ = _run("ntxent", x1[part], x2[part], labels[part], True)
    finally:
        _distributed._AllGather.backward = original  # type: ignore[method-assign]
    for g in grads:
        dist.all_reduce(g)
        g /= WORLD
    _, ref_grads, _ = _run("ntxent", x1, x2, labels, False)
    return {"grad": grads[0], "ref_grad": ref_grads[0]}


def _moco_queue(x1, x2, part) -> dict[str, torch.Tensor]:
    """MoCo with gather_distributed enqueues the keys of every rank, in rank order."""
    loss = get_loss("moco", queue_size=2 * WORLD * N, dim=D, gather_distributed=True).double()
    loss(x1[part].requires_grad_(), x2[part])
    return {"queue": loss.queue.features[: WORLD * N], "keys": x2}


def worker(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    torch.manual_seed(0)  # every rank draws the same global batch
    x1, x2 = torch.randn(WORLD * N, D).double(), torch.randn(WORLD * N, D).double()
    labels = torch.tensor([0, 1, 2, 0, 1, 3, 2, 2, 4, 0, 1, 4])
    part = slice(rank * N, (rank + 1) * N)
    results = {}
    for case in CASES:
        value, grads, x_grad = _run(case, x1[part], x2[part], labels[part], True)
        dist.all_reduce(value)
        for g in grads:  # what DDP does to parameter gradients
            dist.all_reduce(g)
            g /= WORLD
        ref_value, ref_grads, ref_x_grad = _run(case, x1, x2, labels, False)
        results[case] = {
            "value": value / WORLD,
            "ref_value": ref_value,
            "grads": grads,
            "ref_grads": ref_grads,
            # each rank's input gradient is the sum over ranks' losses: WORLD x the global one
            "x_grad": x_grad / WORLD,
            "ref_x_grad": ref_x_grad[part],
        }
    results["unsummed_backward"] = _unsummed_backward(x1, x2, labels, part)
    results["moco_queue"] = _moco_queue(x1, x2, part)
    torch.save(results, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    mp.spawn(worker, args=(sys.argv[1], sys.argv[2]), nprocs=WORLD, join=True)
