"""The Stepper clears gradients as ``zero_grad(set_to_none=True)`` does, skipping only the
profiler range torch opens around it, and only while no profiler records."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchsmith.trainer import ClassificationTask, Stepper
from torchsmith.trainer import _grads as clearing


def _parts() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    groups = [  # two groups: every group's gradients are cleared
        {"params": model[0].parameters()},
        {"params": model[2].parameters(), "lr": 0.05},
    ]
    return model, torch.optim.SGD(groups, lr=0.1, momentum=0.9)


def _batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(5, 4, generator=g), torch.randint(0, 3, (5,), generator=g)) for _ in range(n)
    ]


def _grads(model: nn.Module) -> list[torch.Tensor | None]:
    return [p.grad for p in model.parameters()]


@pytest.mark.parametrize("clip", [None, 1.0], ids=["plain", "clipped"])
def test_the_stepper_trains_bit_for_bit_as_zero_grad_does(clip: float | None) -> None:
    batches = _batches(4)
    model, opt = _parts()
    Stepper(model, ClassificationTask(), opt, clip_grad_norm=clip).window(batches, 0)
    assert _grads(model) == [None] * 4

    hand, hand_opt = _parts()
    for x, y in batches:
        F.cross_entropy(hand(x), y).backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(hand.parameters(), clip)
        hand_opt.step()
        hand_opt.zero_grad(set_to_none=True)
    for ours, theirs in zip(model.parameters(), hand.parameters(), strict=True):
        assert torch.equal(ours, theirs)


def test_accumulated_and_skipped_steps_leave_no_gradient() -> None:
    model, opt = _parts()
    stepper = Stepper(model, ClassificationTask(), opt, nonfinite="skip")
    stepper(_batches(2), step=0)  # an accumulation window: _clip_and_step
    assert _grads(model) == [None] * 4
    x, y = _batches(1)[0]
    stepper([(x * float("nan"), y)], step=1)  # skipped: the NaN loss's gradients go too
    assert stepper.skipped == 1 and _grads(model) == [None] * 4


@pytest.fixture
def ranges_opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the profiler ranges torch's optimizer code opens from here on."""
    opened: list[str] = []
    real = torch.autograd.profiler.record_function

    class Counting(real):  # type: ignore[misc, valid-type]
        def __init__(self, name: str, args: Any = None) -> None:
            opened.append(name)
            super().__init__(name, args)

    monkeypatch.setattr(torch.autograd.profiler, "record_function", Counting)
    return opened


def _train(stepper: Stepper, path: str) -> None:
    """Three steps through one of the Stepper's paths."""
    if path == "accumulating":
        for step in range(3):
            stepper(_batches(2), step)
    elif path == "skipping":
        x, y = _batches(1)[0]
        for step in range(3):
            stepper([(x * float("nan"), y)], step)
    else:
        stepper.window(_batches(3), 0)


PATHS = {
    "plain": {},
    "clipped": {"clip_grad_norm": 1.0},
    "accumulating": {},
    "skipping": {"nonfinite": "skip"},
}


@pytest.mark.parametrize("path", PATHS)
def test_no_zero_grad_range_is_opened_without_a_profiler(
    ranges_opened: list[str], path: str
) -> None:
    model, opt = _parts()
    _train(Stepper(model, ClassificationTask(), opt, **PATHS[path]), path)
    assert _grads(model) == [None] * 4
    if path != "skipping":  # the counting works
        assert ranges_opened.count("Optimizer.step#SGD.step") == 3
    assert not [name for name in ranges_opened if name.startswith("Optimizer.zero_grad")]


def test_on_demand_tracing_gets_every_zero_grad(
    ranges_opened: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clearing, "_ON_DEMAND_TRACING", True)  # KINETO_USE_DAEMON was set
    model, opt = _parts()
    Stepper(model, ClassificationTask(), opt).window(_batches(3), 0)
    assert ranges_opened.count("Optimizer.zero_grad#SGD.zero_grad") == 3


@pytest.mark.parametrize(
    "config",
    [
        None,
        # A profiler of every thread: this thread's own profiler state says nothing.
        pytest.param(
            {"experimental_config": torch._C._profiler._ExperimentalConfig(
                profile_all_threads=True
            )},
            id="all-threads",
        ),
    ],
)  # fmt: skip
def test_a_profiler_still_sees_every_zero_grad(config: dict[str, Any] | None) -> None:
    model, opt = _parts()
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, **(config or {})) as prof:
        Stepper(model, ClassificationTask(), opt).window(_batches(3), 0)
    names = [event.name for event in prof.events()]
    assert names.count("Optimizer.zero_grad#SGD.zero_grad") == 3
    assert _grads(model) == [None] * 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a CUDA memory history needs CUDA")
def test_a_cuda_memory_history_keeps_the_zero_grad_range() -> None:
    torch.cuda.init()
    assert not clearing.ranges_recorded()
    torch.cuda.memory._record_memory_history()
    try:
        assert clearing.ranges_recorded()
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    assert not clearing.ranges_recorded()


class _CountingSGD(torch.optim.SGD):
    calls = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.calls += 1
        super().zero_grad(set_to_none)


def test_an_optimizers_own_zero_grad_is_called() -> None:
    model, _ = _parts()
    opt = _CountingSGD(model.parameters(), lr=0.1)
    Stepper(model, ClassificationTask(), opt).window(_batches(3), 0)
    assert opt.calls == 3

    calls: list[bool] = []  # a zero_grad set on the instance, as a wrapper might
    plain = torch.optim.SGD(model.parameters(), lr=0.1)
    plain.zero_grad = lambda set_to_none=True: calls.append(set_to_none)  # type: ignore[method-assign]
    Stepper(model, ClassificationTask(), plain).window(_batches(2), 0)
    assert calls == [True, True]


class _Forwarding:
    """An optimizer wrapper that forwards every attribute, zero_grad included."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.zero_grads = 0

    def __getattr__(self, name: str) -> Any:
        if name == "zero_grad":
            self.zero_grads += 1
        return getattr(self.optimizer, name)


def test_a_forwarding_wrapper_gets_its_zero_grad_called() -> None:
    _, opt = _parts()
    wrapper = _Forwarding(opt)
    clearing.clear_grads(wrapper)  # type: ignore[arg-type]
    assert wrapper.zero_grads == 1


def test_a_zero_grad_replaced_before_import_is_still_called(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[bool] = []
    torch_zero_grad = torch.optim.Optimizer.zero_grad

    def replaced(self: torch.optim.Optimizer, set_to_none: bool = True) -> None:
        calls.append(set_to_none)
        torch_zero_grad(self, set_to_none)

    monkeypatch.setattr(torch.optim.Optimizer, "zero_grad", replaced)
    importlib.reload(clearing)  # as if torchsmith were imported after the replacement
    try:
        model, opt = _parts()
        Stepper(model, ClassificationTask(), opt).window(_batches(2), 0)
    finally:
        monkeypatch.undo()
        importlib.reload(clearing)
    assert calls == [True, True]
    assert clearing._TORCH_ZERO_GRAD is torch.optim.Optimizer.zero_grad  # restored
