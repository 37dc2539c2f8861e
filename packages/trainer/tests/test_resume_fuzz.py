"""Exact resume over random configs: any task, accumulation, schedule, precision, evaluation,
early stopping and checkpoint policy, interrupted at random steps (several times, and
resumed from an older checkpoint as after a SIGKILL), ends where one uninterrupted run ends:
the same ``model.safetensors`` bytes and optimizer state, the same bytes in every checkpoint
of a step both runs kept (a stop writes a checkpoint of its own, so keep-last and keep-best
may keep others), and every event of the one run's metrics log, timings aside.

The default run tries the same few configs each time; ``--run-slow`` many more, new ones
each time.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from torchsmith.interfaces import TaskOutput
from torchsmith.trainer import ClassificationTask, train

from .conftest import assert_same_log, logged_events

try:
    import torchsmith.losses  # noqa: F401

    _INSTALLED = {"losses"}
except ImportError:  # the trainer installed alone: built-in losses only
    _INSTALLED = set()

TASKS: dict[str, dict[str, Any]] = {
    "classification": {"model": {"kind": "mlp", "hidden": [16], "dropout": 0.2}},
    "contrastive": {"task": {"kind": "contrastive"}, "model": {"kind": "encoder", "hidden": 16}},
    "clip": {
        "task": {"kind": "clip"},
        "model": {"kind": "clip", "embed_dim": 8, "hidden": 16},
        "data": {"kind": "digits", "captions": True},
    },
    "causal_lm": {
        "task": {"kind": "causal_lm"},
        "model": {
            "kind": "gpt",
            "block_size": 8,
            "n_layer": 1,
            "n_head": 2,
            "n_embd": 8,
            "dropout": 0.1,
        },
        "data": {"kind": "text", "block_size": 8, "val_fraction": 0.02},
    },
}


# Losses from torchsmith-losses, some with state of their own: a memory bank, a learnable
# temperature.
LOSSES: dict[str, list[dict[str, Any]]] = {
    "classification": [{}, {"loss": "focal"}, {"loss_kwargs": {"label_smoothing": 0.1}}],
    "contrastive": [
        {},
        {"loss": "ntxent", "loss_kwargs": {"memory_bank_size": 48}},
        {"loss": "ntxent", "loss_kwargs": {"learnable_temperature": True}},
        {"loss": "vicreg"},
    ],
    "clip": [{}, {"loss": "clip"}],  # the model holds the temperature
    "causal_lm": [{}],
}


def nan_now_and_then() -> Any:
    """A classification task whose loss is NaN on every batch that starts with a 7, for
    ``training.nonfinite = "skip"`` to skip (a task builder for ``task.kind = "import"``)."""
    task = ClassificationTask(top_k=(1,))

    def run(model: torch.nn.Module, batch: Any) -> TaskOutput:
        out = task(model, batch)
        if model.training and int(batch[1][0]) == 7:
            out.loss = out.loss * float("nan")
        return out

    return run


@st.composite
def runs(draw: st.DrawFn) -> tuple[dict[str, Any], list[tuple[int, str]]]:
    """A config of at most 24 steps and its interruptions: (stop step, resume from)."""
    task = draw(st.sampled_from(sorted(TASKS)))
    max_steps = draw(st.integers(4, 24))
    every = st.none() | st.integers(1, 9)
    config: dict[str, Any] = {
        **TASKS[task],
        "seed": draw(st.integers(0, 2**32 - 1)),
        "loader": {
            "batch_size": draw(st.sampled_from([8, 24, 64])),
            "shuffle": draw(st.booleans()),
        },
        "optim": {
            "name": draw(st.sampled_from(["adamw", "adam", "sgd", "rmsprop"])),
            "lr": 3e-3,
            "fused": draw(st.sampled_from([None, False])),
        },
        "schedule": {
            "name": draw(st.sampled_from(["constant", "linear", "cosine", "step"])),
            "warmup_steps": draw(st.integers(0, 5)),
            "step_size": draw(st.integers(1, 6)),
        },
        "training": {
            "max_steps": max_steps,
            "grad_accum": draw(st.integers(1, 3)),
            "clip_grad_norm": draw(st.sampled_from([None, 0.5])),
            "precision": draw(st.sampled_from(["fp32", "bf16"])),
            "log_every": draw(st.integers(1, 9)),
            "device": "cpu",
        },
        "eval": {
            "every_steps": draw(every),
            "every_epochs": draw(st.none() | st.just(1)),
            "max_batches": 2,
        },
        "checkpoint": {
            "every_steps": draw(every),
            "keep_last": draw(st.integers(1, 3)),
            "keep_best": draw(st.integers(0, 2)),
        },
    }
    losses = LOSSES[task] if "losses" in _INSTALLED else [{}]
    config["task"] = {**config.get("task", {}), **draw(st.sampled_from(losses))}
    if task == "classification" and draw(st.integers(0, 3)) == 0:
        builder = f"{__name__}:{nan_now_and_then.__name__}"
        config["task"] = {"kind": "import", "target": builder}
        config["training"]["nonfinite"] = "skip"
    elif task == "classification":
        config["task"] |= {"kind": "classification", "top_k": [1, 3]}
    if config["training"].get("nonfinite") != "skip":  # "window": checked at each pause
        config["training"]["nonfinite_check"] = draw(st.sampled_from(["step", "window"]))
    if draw(st.integers(0, 5)) == 0:  # slower: a worker process per run
        config["loader"]["num_workers"] = 1
    if draw(st.booleans()) and (config["eval"]["every_steps"] or config["eval"]["every_epochs"]):
        metric = "val_loss" if task != "causal_lm" else "val_perplexity"
        config["eval"] |= {"early_stopping_metric": metric, "patience": draw(st.integers(1, 2))}
    stops = sorted(draw(st.sets(st.integers(1, max_steps - 1), min_size=1, max_size=3)))
    return config, [(stop, draw(st.sampled_from(["latest", "older"]))) for stop in stops]


def _latest(out: Path) -> Path:
    return (out / "checkpoints" / "latest").resolve()


def _state(checkpoint: Path) -> dict[str, Any]:
    state = torch.load(checkpoint / "state.pt", weights_only=True)
    return {
        "model": (checkpoint / "model.safetensors").read_bytes(),
        "optimizer": state["optimizer"],
        "meta": json.loads((checkpoint / "meta.json").read_text())["metrics"],
    }


def _kept_models(out: Path) -> dict[str, bytes]:
    return {
        p.name: (p / "model.safetensors").read_bytes()
        for p in (out / "checkpoints").iterdir()
        if p.name.startswith("step-")
    }


def _older_checkpoint(out: Path, stop: int) -> Path | None:
    """A kept checkpoint before ``stop``, as a SIGKILL at ``stop`` would leave the newest."""
    kept = sorted(p for p in (out / "checkpoints").iterdir() if p.name.startswith("step-"))
    older = [p for p in kept if int(p.name.removeprefix("step-")) < stop]
    return older[-1] if older else None


def _same(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _check(tmp: Path, config: dict[str, Any], stops: list[tuple[int, str]]) -> None:
    note(f"config: {json.dumps(config)}\nstops: {stops}")
    reference, interrupted = tmp / "reference", tmp / "interrupted"
    for out in (reference, interrupted):  # hypothesis reuses tmp across examples
        if out.exists():
            shutil.rmtree(out)
    finished = train(config, out_dir=reference)
    resume: str | Path | None = None
    for stop, source in stops:
        metrics = train(config, out_dir=interrupted, max_steps=stop, resume=resume)
        if metrics["step"] < stop:  # early stopping ended the run before this stop
            break
        older = _older_checkpoint(interrupted, stop) if source == "older" else None
        resume = older or "latest"
    if resume is not None:
        metrics = train(config, out_dir=interrupted, resume=resume)
    assert metrics == pytest.approx(finished, nan_ok=True, rel=0, abs=0)
    latest, reference_latest = _latest(interrupted), _latest(reference)
    assert latest.name == reference_latest.name
    _same(_state(latest), _state(reference_latest), "state")
    for name, model in _kept_models(interrupted).items():  # a checkpoint is its step's
        assert model == _kept_models(reference).get(name, model), f"{name} differs"
    stopped_at = {stop for stop, _ in stops}
    assert_same_log(logged_events(reference), logged_events(interrupted), stopped_at)


_examples: dict[str, Any] = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)


@settings(max_examples=6, derandomize=True, **_examples)  # the same 6 on every run
@given(run=runs())
def test_random_runs_resume_exactly(tmp_path: Path, run: Any) -> None:
    _check(tmp_path, *run)


@pytest.mark.slow
@settings(max_examples=150, **_examples)
@given(run=runs())
def test_many_random_runs_resume_exactly(tmp_path: Path, run: Any) -> None:
    _check(tmp_path, *run)
