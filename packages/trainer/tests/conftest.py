"""Shared fixtures: small, fast configs (slow tests run with --run-slow, see the root conftest)."""

from __future__ import annotations

import itertools
import json
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


# What a log records of time, which no two runs share.
TIMINGS = {"samples_per_s", "tokens_per_s", "data_wait_fraction", "step_time_s"}


def logged_events(out: Path) -> list[dict[str, Any]]:
    """The metrics log, timings and absolute paths aside."""
    events = []
    for line in (out / "metrics.jsonl").read_text().splitlines():
        event = json.loads(line)
        event["metrics"] = {k: v for k, v in event["metrics"].items() if k not in TIMINGS}
        if event["kind"] == "checkpoint":
            event["message"] = Path(event["message"]).name
        events.append({k: event[k] for k in ("kind", "step", "epoch", "metrics", "message")})
    return events


def assert_same_log(reference: list[Any], interrupted: list[Any], stops: set[int]) -> None:
    """Every event of the uninterrupted run, in order; besides them only what a stop wrote
    at its step: its log of the interval so far, an evaluation and a checkpoint. At a stop
    the order may differ: a stop logs its step before its evaluation, as at a run's planned
    end, while one run where early stopping fires there logs it after."""
    reference, interrupted = _stops_in_order(reference, stops), _stops_in_order(interrupted, stops)
    remaining = iter(interrupted)
    for event in reference:
        for other in remaining:
            if other == event:
                break
            assert other["step"] in stops and other["kind"] in ("step", "eval", "checkpoint"), (
                f"{other} is not in the uninterrupted run's log"
            )
        else:
            raise AssertionError(f"{event} is missing from the interrupted run's log")
    assert not list(remaining)


def _stops_in_order(events: list[Any], stops: set[int]) -> list[Any]:
    """``events`` with those at each stop's step sorted by kind."""
    at_stop = [e for e in events if e["step"] in stops]
    by_kind = iter(sorted(at_stop, key=lambda e: (e["step"], e["kind"])))
    return [next(by_kind) if e["step"] in stops else e for e in events]
