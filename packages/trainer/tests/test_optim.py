"""Optimizers by name with no-decay groups, and LR schedules against their formulas."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from torchsmith.interfaces import ConfigError, TrainingEvent
from torchsmith.trainer import (
    OptimConfig,
    ScheduleConfig,
    build_optimizer,
    build_scheduler,
    build_trainer,
    validate_config,
)
from torchsmith.trainer._models import GPT
from torchsmith.trainer._optim import lr_factor

from .conftest import small_config


def test_norms_biases_and_embeddings_do_not_decay() -> None:
    model = GPT(vocab_size=7, block_size=8, n_layer=1, n_head=2, n_embd=8)
    opt = build_optimizer(model, OptimConfig(name="adamw", weight_decay=0.1))
    decay, no_decay = opt.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "blocks.0.attn.qkv.weight" in decayed and "lm_head.weight" in decayed
    assert {"blocks.0.ln_1.weight", "blocks.0.attn.qkv.bias", "wte.weight"} <= exempt
    assert all(not n.endswith("bias") and "ln" not in n for n in decayed)
    assert decayed | exempt == set(names.values())


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("adamw", torch.optim.AdamW),
        ("adam", torch.optim.Adam),
        ("sgd", torch.optim.SGD),
        ("rmsprop", torch.optim.RMSprop),
    ],
)
def test_optimizers_by_name(name: str, cls: type) -> None:
    opt = build_optimizer(nn.Linear(2, 2), OptimConfig(name=name, lr=0.01))  # type: ignore[arg-type]
    assert type(opt) is cls and opt.param_groups[0]["lr"] == 0.01


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_fused_kernel_unless_turned_off(name: str) -> None:
    fused = build_optimizer(nn.Linear(2, 2), OptimConfig(name=name))  # type: ignore[arg-type]
    assert fused.defaults["fused"] is True
    plain = build_optimizer(nn.Linear(2, 2), OptimConfig(name=name, fused=False))  # type: ignore[arg-type]
    assert not plain.defaults["fused"]


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_fused_steps_equal_the_default_implementation_to_rounding(name: str) -> None:
    """torch's own for-loop implementation is the reference: 20 steps on a small GPT's
    parameters, fed the same gradients (drawn, not computed, so rounding cannot compound
    through the model into a different trajectory)."""

    def stepped(fused: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = GPT(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16)
        config = OptimConfig(name=name, lr=1e-2, weight_decay=0.1, fused=fused)  # type: ignore[arg-type]
        opt = build_optimizer(model, config)
        grads = torch.Generator().manual_seed(1)
        for _ in range(20):
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=grads)
            opt.step()
        return [p.detach().clone() for p in model.parameters()]

    for fused, reference in zip(stepped(True), stepped(False), strict=True):
        torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-6)


def test_fused_true_needs_an_optimizer_that_has_one() -> None:
    with pytest.raises(ConfigError, match=r"optim\.fused: rmsprop has no fused kernel"):
        validate_config({"optim": {"name": "rmsprop", "fused": True}})
    assert validate_config({"optim": {"name": "rmsprop"}}).optim.fused is None


class _ComplexLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 3, dtype=torch.complex64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(torch.complex64) @ self.weight).abs()


def test_parameters_without_a_fused_kernel_fall_back_or_fail_naming_the_field() -> None:
    """Torch refuses complex parameters only at the first step(): the choice is made before."""
    model = _ComplexLinear()
    opt = build_optimizer(model, OptimConfig())
    assert not opt.defaults["fused"]
    model(torch.randn(2, 4)).sum().backward()
    opt.step()  # the default implementation takes complex parameters
    with pytest.raises(ConfigError, match=r"optim.fused: .* torch.complex64 parameter on cpu"):
        build_optimizer(model, OptimConfig(fused=True))


def test_without_a_fused_kernel_auto_falls_back_and_true_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An older torch without the kernel for a device refuses ``fused=True`` when built."""

    class NoFusedAdamW(torch.optim.AdamW):
        def __init__(self, *args: object, fused: bool | None = None, **kwargs: object) -> None:
            if fused:
                raise RuntimeError(
                    "`fused=True` requires all the params to be on a supported device"
                )
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.optim, "AdamW", NoFusedAdamW)
    opt = build_optimizer(nn.Linear(2, 2), OptimConfig())
    assert type(opt) is NoFusedAdamW and not opt.defaults["fused"]
    with pytest.raises(ConfigError, match=r"optim.fused: torch .* has no fused adamw"):
        build_optimizer(nn.Linear(2, 2), OptimConfig(fused=True))


def _reference_lrs(make: Callable[[torch.optim.Optimizer], Any], steps: int) -> list[float]:
    """The LR of each of ``steps`` steps under the scheduler ``make`` builds (base LR 1)."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def _lrs(schedule: ScheduleConfig, steps: int) -> list[float]:
    """Our schedule's LR at each of ``steps`` steps, as a fraction of the base LR."""
    return _reference_lrs(lambda opt: build_scheduler(opt, schedule, steps), steps)


def test_warmup_then_cosine() -> None:
    lrs = _lrs(ScheduleConfig(name="cosine", warmup_steps=4, min_lr_ratio=0.1), 20)
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    for step in range(4, 20):  # 0.1 + 0.9 * (1 + cos(pi * t)) / 2 written out
        t = (step - 4) / 16
        assert lrs[step] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * t)))


def test_linear_constant_and_step() -> None:
    assert _lrs(ScheduleConfig(name="linear"), 4) == pytest.approx([1.0, 0.75, 0.5, 0.25])
    assert _lrs(ScheduleConfig(name="constant", warmup_steps=2), 4) == pytest.approx(
        [0.5, 1.0, 1.0, 1.0]
    )
    step = _lrs(ScheduleConfig(name="step", step_size=2, gamma=0.5), 6)
    assert step == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25, 0.25])


def test_a_step_event_reports_the_lr_that_step_used(tmp_path: Path) -> None:
    """The scheduler steps after the optimizer, so its last LR is the next step's: the event
    carries the one the logged step trained with (the last step's is not the schedule's 0)."""
    config = small_config(
        tmp_path,
        "training.max_steps=8",
        "training.log_every=1",
        "schedule={name: linear, warmup_steps: 4}",
    )
    logged: dict[int, float] = {}

    class Sink:
        def emit(self, event: TrainingEvent) -> None:
            if event.kind == "step":
                logged[event.step] = event.metrics["lr"]

    build_trainer(config, sinks=[Sink()]).fit()
    factor = lr_factor(config.schedule, 8)
    assert logged == {s: pytest.approx(config.optim.lr * factor(s - 1)) for s in range(1, 9)}
    assert logged[1] == pytest.approx(config.optim.lr / 4) and logged[8] > 0.0


@pytest.mark.parametrize("warmup", [0, 1, 6])
def test_schedules_match_transformers_after_warmup(warmup: int) -> None:
    """transformers' schedules warm up from 0 (its first step learns nothing); ours from
    1/warmup, as nanoGPT's does: our step s is its step s + 1 during warmup, and the same
    step after it."""
    optimization = pytest.importorskip("transformers.optimization")
    total = 40
    cases = {
        "cosine": (0.1, lambda o: optimization.get_cosine_with_min_lr_schedule_with_warmup(
            o, warmup, total, min_lr_rate=0.1)),
        "linear": (0.0, lambda o: optimization.get_linear_schedule_with_warmup(o, warmup, total)),
        "constant": (0.0, lambda o: optimization.get_constant_schedule_with_warmup(o, warmup)),
    }  # fmt: skip
    for name, (floor, make) in cases.items():
        ours = _lrs(ScheduleConfig(name=name, warmup_steps=warmup, min_lr_ratio=floor), total)
        theirs = _reference_lrs(make, total + 1)
        expected = theirs[1 : warmup + 1] + theirs[warmup:total]
        assert ours == pytest.approx(expected, rel=1e-12, abs=1e-15), name


@pytest.mark.parametrize("warmup", [0, 1, 6])
def test_schedules_match_torchs_own_composed(warmup: int) -> None:
    """The same schedules built from torch's: LinearLR from 1/warmup, then the decay."""
    total, floor, sched = 40, 0.1, torch.optim.lr_scheduler

    def composed(decay: Callable[[torch.optim.Optimizer], Any]) -> Callable[..., Any]:
        if warmup == 0:
            return decay
        return lambda o: sched.SequentialLR(
            o,
            [sched.LinearLR(o, 1 / warmup, 1.0, total_iters=max(1, warmup - 1)), decay(o)],
            milestones=[warmup],
        )

    cases = {
        "cosine": lambda o: sched.CosineAnnealingLR(o, T_max=total - warmup, eta_min=floor),
        "linear": lambda o: sched.LinearLR(o, 1.0, floor, total_iters=total - warmup),
        "step": lambda o: sched.StepLR(o, step_size=7, gamma=0.5),
    }
    for name, decay in cases.items():
        config = ScheduleConfig(
            name=name, warmup_steps=warmup, min_lr_ratio=floor, step_size=7, gamma=0.5
        )
        expected = _reference_lrs(composed(decay), total)
        assert _lrs(config, total) == pytest.approx(expected, rel=1e-9, abs=1e-12), name
