"""Built-in cases, each registered only when the suite it times is installed.

    losses.forward_backward    a torchsmith-losses loss, forward and backward
    losses.ntxent              NT-Xent from torchsmith-losses, side by side with ...
    losses.ntxent_reference    ... NT-Xent written here from the SimCLR paper in plain torch
    trainer.step               one torchsmith-trainer Stepper step, next batch included
                               (reports the data-wait fraction), side by side with ...
    trainer.step_reference     ... the same step as a hand-written loop
    data.build_loader          a batch from torchsmith-trainer's loader, side by side with ...
    data.dataloader_reference  ... a plain torch DataLoader over the same data

Generated models bring their own ``bench_model.py`` (run ``torchsmith bench run DIR``).
Listed in this package's ``torchsmith.benchmarks`` entry points, so ``torchsmith bench run``
loads them; siblings are imported inside the cases only.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from importlib.util import find_spec
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import benchmark


def _installed(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _views(batch_size: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    z1 = torch.randn(batch_size, dim, generator=generator, requires_grad=True)
    z2 = torch.randn(batch_size, dim, generator=generator, requires_grad=True)
    return z1, z2


def _backward_of(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], batch_size: int,
                 dim: int) -> Callable[[], object]:  # fmt: skip
    z1, z2 = _views(batch_size, dim)

    def step() -> None:
        z1.grad = z2.grad = None
        loss(z1, z2).backward()  # type: ignore[no-untyped-call]

    return step


def ntxent_reference(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent (Chen et al. 2020, eq. 1): each of 2N views picks its pair among the 2N - 1."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2N, D)
    logits = z @ z.T / temperature  # (2N, 2N)
    logits.fill_diagonal_(float("-inf"))  # a view is never its own candidate
    n = z1.shape[0]
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(logits, targets)


if _installed("torchsmith.losses"):

    @benchmark(
        "losses.forward_backward",
        params={"loss": ["ntxent", "clip", "vicreg", "barlow_twins"], "batch_size": [256],
                "dim": [128]},
    )  # fmt: skip
    def loss_forward_backward(loss: str, batch_size: int, dim: int) -> Callable[[], object]:
        from torchsmith.losses import get_loss

        return _backward_of(get_loss(loss), batch_size, dim)

    @benchmark("losses.ntxent_reference", params={"batch_size": [256], "dim": [128]})
    def ntxent_plain(batch_size: int, dim: int) -> Callable[[], object]:
        return _backward_of(ntxent_reference, batch_size, dim)

    @benchmark(
        "losses.ntxent", params={"batch_size": [256], "dim": [128]},
        baseline="losses.ntxent_reference",
    )  # fmt: skip
    def ntxent_suite(batch_size: int, dim: int) -> Callable[[], object]:
        from torchsmith.losses import get_loss

        return _backward_of(get_loss("ntxent", temperature=0.5), batch_size, dim)


def _digits_batches(batch_size: int) -> Iterator[Any]:
    from torchsmith.trainer import ResumableSampler, build_loader, digits

    train, _ = digits()
    sampler = ResumableSampler(len(train), batch_size)  # shuffled, as the trainer reads
    loader = build_loader(train, batch_size, sampler=sampler)
    return itertools.chain.from_iterable(itertools.repeat(loader))  # epoch after epoch


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))


class _TimedSteps:
    """Calls ``step(batch)`` on the next batch; keeps the share of time spent waiting for data."""

    def __init__(self, batches: Iterator[Any], step: Callable[[Any], object]) -> None:
        self.batches, self.step = batches, step
        self.waiting = self.total = 0.0

    def __call__(self) -> None:
        start = time.perf_counter()
        batch = next(self.batches)
        got = time.perf_counter()
        self.step(batch)
        self.waiting += got - start
        self.total += time.perf_counter() - start

    def extra(self) -> dict[str, float]:
        return {"data_wait_fraction": self.waiting / self.total} if self.total else {}


if _installed("torchsmith.trainer"):

    @benchmark("trainer.step_reference", params={"batch_size": [64]})
    def step_by_hand(batch_size: int) -> Callable[[], object]:
        model = _mlp()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step(batch: Any) -> None:
            x, y = batch
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call]
            optimizer.step()

        return _TimedSteps(_digits_batches(batch_size), step)

    @benchmark("trainer.step", params={"batch_size": [64]}, baseline="trainer.step_reference")
    def trainer_step(batch_size: int) -> Callable[[], object]:
        from torchsmith.trainer import ClassificationTask, Stepper

        model = _mlp()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        stepper = Stepper(model=model, task=ClassificationTask(), optimizer=optimizer)
        counter = itertools.count()
        return _TimedSteps(_digits_batches(batch_size), lambda b: stepper([b], next(counter)))

    @benchmark("data.dataloader_reference", params={"batch_size": [64]})
    def plain_loader(batch_size: int) -> Callable[[], object]:
        from torchsmith.trainer import digits

        train, _ = digits()
        loader = torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True,
                                             drop_last=True)  # fmt: skip
        batches = itertools.chain.from_iterable(itertools.repeat(loader))
        return lambda: next(batches)

    @benchmark(
        "data.build_loader", params={"batch_size": [64]}, baseline="data.dataloader_reference"
    )
    def suite_loader(batch_size: int) -> Callable[[], object]:
        batches = _digits_batches(batch_size)
        return lambda: next(batches)
