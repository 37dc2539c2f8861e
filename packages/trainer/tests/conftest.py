"""Shared fixtures: small, fast configs (slow tests run with --run-slow, see the root conftest)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch

from torchsmith.trainer import ExperimentConfig, Trainer, apply_overrides, validate_config


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_config(out_dir: Path, *overrides: str, **sections: dict[str, Any]) -> ExperimentConfig:
    """A digits MLP run of a few dozen steps, writing under ``out_dir``."""
    base: dict[str, Any] = {
        "seed": 3,
        "out_dir": str(out_dir),
        "model": {"kind": "mlp", "hidden": [32], "dropout": 0.1},
        "loader": {"batch_size": 64},
        "optim": {"lr": 3e-3},
        "schedule": {"name": "cosine", "warmup_steps": 3},
        "training": {"max_steps": 30, "log_every": 5},
        "eval": {"every_steps": None, "max_batches": 2},
        "checkpoint": {"keep_last": 3},
    }
    for name, values in sections.items():
        replace = name == "model" and values.get("kind", "mlp") != "mlp"
        base[name] = values if replace else {**base.get(name, {}), **values}
    return validate_config(apply_overrides(base, overrides))


def poison_step(trainer: Trainer, step: int) -> None:
    """Make the task's loss NaN for every micro-batch of optimizer step ``step`` (0-based).

    Without accumulation the trainer runs a window of steps in one call and moves
    ``trainer.step`` after it, so steps are counted here: one training call is one step.
    """
    task, accum = trainer.stepper.task, trainer.schedule.grad_accum
    calls = itertools.count(trainer.step)

    def poisoned(model: torch.nn.Module, batch: Any) -> Any:
        out = task(model, batch)
        if model.training and (next(calls) if accum == 1 else trainer.step) == step:
            out.loss = out.loss * float("nan")
        return out

    trainer.stepper.task = poisoned
