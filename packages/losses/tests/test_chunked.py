"""chunk_size: block-wise log-sum-exp with recomputation equals the dense path."""

from __future__ import annotations

import pytest
import torch

from torchsmith.losses import ClipLoss, CrossModalLoss, NTXentLoss, SigLipLoss

LOSSES = {
    "clip": lambda **kw: ClipLoss(learnable_temperature=True, **kw),
    "siglip": lambda **kw: SigLipLoss(learnable=True, **kw),
    "ntxent": lambda **kw: NTXentLoss(learnable_temperature=True, memory_bank_size=5, **kw),
    "cross_modal": lambda **kw: CrossModalLoss(learnable_temperature=True, **kw),
}


def _run(loss: torch.nn.Module, a: torch.Tensor, b: torch.Tensor) -> list[torch.Tensor]:
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    value = loss(a, b)
    params = list(loss.parameters())
    grads = torch.autograd.grad(value, [a, b, *params])
    return [value.detach(), *grads]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chunk", [1, 3, 7, 16])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_chunked_matches_dense(name, chunk, dtype):
    a, b = torch.randn(10, 6, dtype=dtype), torch.randn(10, 6, dtype=dtype)
    dense, chunked = (
        LOSSES[name]().to(dtype).eval(),
        LOSSES[name](chunk_size=chunk).to(dtype).eval(),
    )
    dense(a, b)  # eval forward: allocates ntxent's memory bank without updating it
    chunked.load_state_dict(dense.state_dict())  # same bank, same temperature
    tol = 1e-5 if dtype == torch.float32 else 1e-11
    for x, y in zip(_run(dense, a, b), _run(chunked, a, b), strict=True):
        torch.testing.assert_close(x, y, rtol=tol, atol=tol)


def test_chunked_clip_gradcheck_fp64():
    a, b = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    loss = ClipLoss(temperature=0.5, chunk_size=2)
    assert torch.autograd.gradcheck(loss, (a.requires_grad_(), b.requires_grad_()))


def test_chunked_ntxent_gradcheck_fp64():
    a, b = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    loss = NTXentLoss(chunk_size=3)
    assert torch.autograd.gradcheck(loss, (a.requires_grad_(), b.requires_grad_()))


def test_chunked_path_never_builds_the_full_matrix():
    """Record every tensor autograd saves: no (n, n) logits survive the forward."""
    n, chunk = 64, 8
    a, b = torch.randn(n, 4, requires_grad=True), torch.randn(n, 4, requires_grad=True)
    largest: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        largest.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        ClipLoss(chunk_size=chunk)(a, b).backward()
    assert max(largest) <= chunk * n
    largest.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        ClipLoss()(a, b)
    assert max(largest) >= n * n  # the dense path does keep it: the hook sees it
