"""What the resume's checks of saved optimizer and scheduler state let through: the state
of every optimizer torch ships, after real steps, with parameters of every awkward shape
(the refusals are in test_damaged_state_fuzz.py)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from torchsmith.interfaces import CheckpointError
from torchsmith.trainer._config_checks import resume_warnings
from torchsmith.trainer._restore import check_same_kinds, load_optimizer_state


class _Odd(nn.Module):
    """A matrix, a vector, a scalar, a one-element vector, and a parameter never used."""

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.w = nn.Parameter(torch.randn(3, 4, dtype=dtype))
        self.b = nn.Parameter(torch.randn(3, dtype=dtype))
        self.s = nn.Parameter(torch.randn((), dtype=dtype))
        self.one = nn.Parameter(torch.randn(1, dtype=dtype))
        self.unused = nn.Parameter(torch.randn(2, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x @ self.w.T + self.b) * self.s * self.one).abs().sum()


Groups = Callable[[_Odd], list[dict[str, Any]]]


def _two(model: _Odd, **second: Any) -> list[dict[str, Any]]:
    rest = [model.s, model.one, model.unused]
    return [{"params": [model.w, model.b]}, {"params": rest, **second}]


optim = torch.optim
OPTIMIZERS: dict[str, Callable[[_Odd], torch.optim.Optimizer]] = {
    "sgd": lambda m: optim.SGD(_two(m), lr=0.1),
    "sgd momentum nesterov": lambda m: optim.SGD(_two(m), lr=0.1, momentum=0.9, nesterov=True),
    "sgd momentum in one group": lambda m: optim.SGD(_two(m, momentum=0.9), lr=0.1),
    "adam amsgrad": lambda m: optim.Adam(_two(m), amsgrad=True),
    "adam amsgrad in one group": lambda m: optim.Adam(_two(m, amsgrad=True)),
    "adam tensor lr": lambda m: optim.Adam(_two(m), lr=torch.tensor(1e-3)),
    "adamw fused": lambda m: optim.AdamW(_two(m), fused=True),
    "adamw foreach": lambda m: optim.AdamW(_two(m), foreach=True),
    "rmsprop centered momentum": lambda m: optim.RMSprop(_two(m), centered=True, momentum=0.9),
    "rmsprop centered in one group": lambda m: optim.RMSprop(_two(m, centered=True)),
    "adagrad": lambda m: optim.Adagrad(_two(m)),
    "adadelta": lambda m: optim.Adadelta(_two(m)),
    "adamax": lambda m: optim.Adamax(_two(m)),
    "nadam": lambda m: optim.NAdam(_two(m)),
    "radam decoupled": lambda m: optim.RAdam(_two(m), decoupled_weight_decay=True),
    "asgd": lambda m: optim.ASGD(_two(m)),
    "rprop": lambda m: optim.Rprop(_two(m)),
    "lbfgs": lambda m: optim.LBFGS(m.parameters(), history_size=3, max_iter=3),
}
if hasattr(torch.optim, "Adafactor"):  # torch >= 2.5: factored moments of other shapes
    OPTIMIZERS["adafactor"] = lambda m: torch.optim.Adafactor(_two(m))


def _stepped(build: Callable[[_Odd], torch.optim.Optimizer], dtype: torch.dtype) -> Any:
    model = _Odd(dtype)
    optimizer = build(model)
    x = torch.randn(5, 4, dtype=dtype)
    for _ in range(2):

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = model(x).real
            loss.backward()  # type: ignore[no-untyped-call]
            return loss

        optimizer.step(closure)
    return copy.deepcopy(optimizer.state_dict())


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_torch_ships_resumes_after_real_steps(name: str) -> None:
    build = OPTIMIZERS[name]
    saved = _stepped(build, torch.float32)
    model = _Odd()
    fresh = build(model)
    load_optimizer_state(fresh, saved, "state.pt")
    fresh.step(lambda: model(torch.randn(5, 4)))  # and torch steps on from it


@pytest.mark.parametrize(
    "name", ["adam amsgrad", "sgd momentum nesterov", "rmsprop centered momentum"]
)
def test_complex_parameters_resume(name: str) -> None:
    saved = _stepped(OPTIMIZERS[name], torch.complex64)
    load_optimizer_state(OPTIMIZERS[name](_Odd(torch.complex64)), saved, "state.pt")


def test_a_flag_an_older_torch_did_not_save_is_filled_in_not_refused() -> None:
    saved = _stepped(lambda m: torch.optim.AdamW(_two(m)), torch.float32)
    for group in saved["param_groups"]:
        del group["decoupled_weight_decay"]  # AdamW's __setstate__ puts it back
    load_optimizer_state(torch.optim.AdamW(_two(_Odd())), saved, "state.pt")


def test_a_refused_state_leaves_the_optimizer_as_it_was() -> None:
    model = _Odd()
    optimizer = torch.optim.AdamW(_two(model))
    saved = _stepped(lambda m: torch.optim.AdamW(_two(m)), torch.float32)
    saved["state"][0]["exp_avg"] = torch.zeros(7)
    with pytest.raises(CheckpointError, match="'exp_avg' of parameter 0 in param_groups"):
        load_optimizer_state(optimizer, saved, "state.pt")
    assert not optimizer.state  # as before the load: nothing of the refused state


def test_a_schedulers_infinite_state_is_its_kind() -> None:
    """ReduceLROnPlateau keeps ``inf`` (``mode_worse``, ``best`` before a metric)."""
    optimizer = torch.optim.SGD(_Odd().parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    check_same_kinds(scheduler.state_dict(), scheduler.state_dict(), "state.pt", "scheduler")
    saved = {k: v for k, v in scheduler.state_dict().items() if k != "patience"}
    with pytest.raises(CheckpointError, match=r"state\.pt: scheduler has no 'patience'"):
        check_same_kinds(saved, scheduler.state_dict(), "state.pt", "scheduler")


def test_a_schedulers_private_key_an_older_torch_did_not_save_is_not_refused() -> None:
    """torch's LambdaLR.load_state_dict keeps the fresh value of a key the state lacks."""
    optimizer = torch.optim.SGD(_Odd().parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    saved = {k: v for k, v in scheduler.state_dict().items() if not k.startswith("_")}
    saved["verbose"] = False  # what older torch versions saved too
    check_same_kinds(saved, scheduler.state_dict(), "state.pt", "scheduler", private_optional=True)
    scheduler.load_state_dict(saved)
    with pytest.raises(CheckpointError, match=r"state\.pt: scheduler has no '_step_count'"):
        check_same_kinds(saved, scheduler.state_dict(), "state.pt", "scheduler")
    del saved["last_epoch"]  # public state is never optional
    with pytest.raises(CheckpointError, match=r"state\.pt: scheduler has no 'last_epoch'"):
        check_same_kinds(
            saved, scheduler.state_dict(), "state.pt", "scheduler", private_optional=True
        )


@pytest.mark.parametrize(
    ("schedule", "steps", "warned"),
    [("cosine", 400, True), ("linear", 2000, True), ("cosine", 1000, False),
     ("constant", 400, False), ("step", 400, False)],
)  # fmt: skip
def test_resume_warns_when_another_max_steps_replans_a_decaying_schedule(
    schedule: str, steps: int, warned: bool
) -> None:
    """Allowed (a run may be extended), but a resume that forgot the --set which planned
    the run looks the same, and re-plans the LR decay from there."""
    saved = {"training": {"max_steps": 1000}, "schedule": {"name": schedule}}
    now = {"training": {"max_steps": steps}, "schedule": {"name": schedule}}
    found = resume_warnings(saved, now)
    assert bool(found) == warned
    if warned:
        assert found[0].startswith(f"training.max_steps: checkpoint 1000, this run {steps}")
        assert found[0].endswith("--set training.max_steps=1000 continues the checkpoint's plan")
