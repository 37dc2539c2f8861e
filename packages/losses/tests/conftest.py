"""Reference implementations for the losses' tests, loaded as cheaply as possible.

open_clip's loss.py is self-contained, so it is loaded by file path without running
``open_clip/__init__`` (which imports timm and huggingface_hub). The references are
test-only dependencies; without them the comparison tests skip with a reason.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch


def _load_file(package: str, relative: str, name: str) -> ModuleType:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        pytest.skip(f"reference package {package!r} is not installed (test group)")
    path = Path(spec.origin).parent / relative
    file_spec = importlib.util.spec_from_file_location(name, path)
    assert file_spec is not None and file_spec.loader is not None
    module = importlib.util.module_from_spec(file_spec)
    file_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def open_clip_loss() -> ModuleType:
    """open_clip/loss.py (ClipLoss, SigLipLoss)."""
    return _load_file("open_clip", "loss.py", "_open_clip_loss_reference")


@pytest.fixture(scope="session")
def lightly_loss() -> ModuleType:
    """lightly.loss (NTXentLoss, VICRegLoss, BarlowTwinsLoss)."""
    return pytest.importorskip("lightly.loss", reason="lightly is a test-only reference")


@pytest.fixture(scope="session")
def pml() -> tuple[ModuleType, ModuleType, ModuleType]:
    """pytorch_metric_learning (losses, miners, reducers)."""
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    return (
        losses,
        importlib.import_module("pytorch_metric_learning.miners"),
        importlib.import_module("pytorch_metric_learning.reducers"),
    )


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _value_and_grads(
    fn: Callable[..., torch.Tensor], *inputs: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    leaves = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    value = fn(*leaves)
    grads = torch.autograd.grad(value, [x for x in leaves if x.requires_grad])
    return value.detach(), [g.detach() for g in grads]


@pytest.fixture
def value_and_grads() -> Callable[..., tuple[torch.Tensor, list[torch.Tensor]]]:
    """fn, *inputs -> (loss value, [d loss / d input for each floating input])."""
    return _value_and_grads


def assert_same(
    ours: tuple[torch.Tensor, list[torch.Tensor]],
    ref: tuple[torch.Tensor, list[torch.Tensor]],
    dtype: torch.dtype,
) -> None:
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}
    torch.testing.assert_close(ours[0], ref[0].to(ours[0].dtype), **tol)
    assert len(ours[1]) == len(ref[1])
    for mine, theirs in zip(ours[1], ref[1], strict=True):
        torch.testing.assert_close(mine, theirs, **tol)


@pytest.fixture
def same() -> Callable[..., None]:
    """Assert (value, grads) pairs match: 1e-5 relative in fp32, 1e-10 in fp64."""
    return assert_same
