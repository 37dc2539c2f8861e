"""Every loss on a real GPU: the CPU's value and gradients, and no host syncs.

Skipped without CUDA (CI has none). ``torch.cuda.set_sync_debug_mode("error")`` turns
any host sync inside a loss (``.item()``, ``bool(tensor)``, a device-to-host copy) into
an error, the GPU counterpart of test_host_sync.py's CPU stand-ins.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch

from torchsmith.losses import get_loss, list_losses

from .test_edge_cases import _args, _build

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _run(name: str, device: str, dtype: torch.dtype) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The loss's value and its inputs' gradients, computed on ``device``."""
    torch.manual_seed(0)  # the same inputs, and the same initial state (moco's queue)
    diff, fixed = _args(name, 12, 16, dtype)
    # moco's random queue is drawn on the CPU here (given dim), not lazily on the device.
    loss = get_loss("moco", dim=16) if name == "moco" else _build(name)
    loss = loss.to(device=device, dtype=dtype)
    leaves = [x.to(device).requires_grad_() for x in diff]
    value = loss(*leaves, *[f.to(device) for f in fixed])
    value.backward()
    grads = [x.grad for x in leaves if x.grad is not None]  # moco's key is detached by design
    return value.detach(), grads


@pytest.mark.parametrize("name", sorted(list_losses()))
def test_the_gpu_gives_the_cpus_value_and_gradients(name: str) -> None:
    cpu_value, cpu_grads = _run(name, "cpu", torch.float64)
    value, grads = _run(name, "cuda", torch.float64)
    assert value.is_cuda and len(grads) == len(cpu_grads)
    torch.testing.assert_close(value.cpu(), cpu_value, rtol=1e-9, atol=1e-12)
    for got, want in zip(grads, cpu_grads, strict=True):
        torch.testing.assert_close(got.cpu(), want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(list_losses()))
def test_half_precision_on_the_gpu_is_finite(name: str, dtype: torch.dtype) -> None:
    value, grads = _run(name, "cuda", dtype)
    assert torch.isfinite(value) and all(torch.isfinite(g).all() for g in grads)


@contextlib.contextmanager
def syncs_are_errors() -> Iterator[None]:
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


# Both read one number back by design: supcon whether any anchor has a positive (else it
# switches to its negatives-only term and warns), triplet whether any triplet is valid.
SYNC_ONCE_BY_DESIGN = {"supcon", "triplet"}


@pytest.mark.parametrize("name", sorted(set(list_losses()) - SYNC_ONCE_BY_DESIGN))
def test_a_training_step_of_the_loss_does_not_sync(name: str) -> None:
    torch.manual_seed(0)
    diff, fixed = _args(name, 12, 16, torch.float32)
    inputs = [x.cuda().requires_grad_() for x in diff]
    targets = [f.cuda() for f in fixed]
    loss = _build(name).cuda()
    with syncs_are_errors():
        for _ in range(2):  # twice: a queue or memory bank is full on the second step
            loss(*inputs, *targets).backward()
