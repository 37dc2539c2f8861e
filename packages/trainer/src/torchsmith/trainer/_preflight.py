"""One validation batch through the model, task and metrics before the first step.

The config alone cannot tell that a loss does not take this task's outputs
(``task.loss=ntxent`` on a classifier), that a user metric has the wrong signature or
returns a vector, or how many classes an imported model has. Each of those would
otherwise fail at the first step or the first evaluation, after work was done.

The batch runs in eval mode, outside autograd, through a copy of the task (a loss that
fills a memory bank on first use fills the copy's), and every RNG (python, numpy, torch,
the GPU's) is put back afterwards, so the run that follows trains as it would without it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

from torchsmith.interfaces import ConfigError, TaskOutput

from ._config import ExperimentConfig, ImportedModelConfig
from ._data import move_to
from ._evaluate import MetricFn, metric_value
from ._rng import rng_state, set_rng_state


def preflight(
    config: ExperimentConfig,
    model: nn.Module,
    task: Any,
    val: Dataset[Any],
    device: torch.device,
    metrics: Mapping[str, MetricFn],
    train: Dataset[Any] | None = None,
) -> None:
    """Run two validation examples through ``task`` and each of ``metrics``; a ConfigError
    naming the field (``task.loss``, ``model``, ``data.target`` for imported data,
    ``eval.metrics.<name>``, or the metric a top-k needs) for what fails. Imported data's
    ``train`` set goes through the task too: its examples may differ from validation's."""
    imported = config.data.kind == "import"
    batch = _first_batch(config, val, "validation", device)
    training, rngs = model.training, rng_state()
    model.eval()
    try:
        with torch.no_grad():
            if imported and train is not None:
                train_batch = _first_batch(config, train, "training", device)
                _run_task(config, model, _copy(config, task), train_batch, "training")
            out = _run_task(config, model, _copy(config, task), batch)
            if config.task.kind == "import":
                _check_imported_metrics(config, out)
            for name, fn in metrics.items():
                _run_metric(config, name, fn, model, batch, out)
            _check_top_k(config, model, batch[0])
    finally:
        model.train(training)
        set_rng_state(rngs)


def _copy(config: ExperimentConfig, task: Any) -> Any:
    """A copy of ``task`` to check, so that the run's own (a memory bank) is left as it was."""
    try:
        return copy.deepcopy(task)
    except Exception as exc:
        raise ConfigError(
            f"task.target: the task {config.task.target!r} cannot be copied "
            f"({type(exc).__name__}: {exc}); the check before training runs a copy so that "
            "it leaves the task as it was"
        ) from exc


def _first_batch(
    config: ExperimentConfig, data: Dataset[Any], name: str, device: torch.device
) -> Any:
    """The first two examples of ``data``, collated as a DataLoader would, on ``device``."""
    try:
        examples = [data[i] for i in range(min(2, len(data)))]  # type: ignore[arg-type]
        return move_to(default_collate(examples), device)
    except Exception as exc:  # an item that cannot be read, or items that do not stack
        field = "data.target" if config.data.kind == "import" else "data"
        raise ConfigError(
            f"{field}: the first {name} examples cannot be read into a batch: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _run_task(
    config: ExperimentConfig, model: nn.Module, task: Any, batch: Any, which: str = "validation"
) -> Any:
    try:
        return task(model, batch)
    except ConfigError:
        raise
    except Exception as exc:  # a loss or an imported model that does not fit the task
        # (a DataError included: the batch is the run's own data, so the parts are at fault)
        t = config.task
        field = "task.loss" if t.loss else "model"
        what = f"the loss {t.loss!r}" if t.loss else f"a {config.model.kind!r} model"
        if t.kind == "import":
            field, what = "task.target", f"the task {t.target!r}, with {what},"
        target = getattr(config.data, "target", None)
        if target is not None:  # imported data: it may be the part that does not fit
            field, what = "data.target", f"the data of {target!r}, with {what},"
        raise ConfigError(
            f"{field}: {what} fails on a {t.kind} task's {which} batch before training: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _check_imported_metrics(config: ExperimentConfig, out: Any) -> None:
    """An imported task's output, and the metric names only it can tell: those a run stops
    early on or keeps checkpoints by must be among them, and no user metric may take one."""
    target = config.task.target
    if not isinstance(out, TaskOutput):
        raise ConfigError(
            f"task.target: the task of {target!r} returned {type(out).__name__}, not a "
            "TaskOutput(loss, num_items, metrics)"
        )
    loss, items = out.loss, out.num_items
    if not (isinstance(loss, torch.Tensor) and loss.numel() == 1):
        raise ConfigError(
            f"task.target: the task of {target!r} returned a loss of {_form(loss)}; the "
            "trainer needs the batch's mean loss, a tensor of one element"
        )
    count = isinstance(items, int) and not isinstance(items, bool)
    if not (count or (isinstance(items, torch.Tensor) and items.ndim == 0)):
        raise ConfigError(
            f"task.target: the task of {target!r} returned num_items of {_form(items)}; "
            "the trainer needs the batch's item count, an int or a 0-dim tensor"
        )
    weight = out.loss_weight
    number = isinstance(weight, (int, float)) and not isinstance(weight, bool)
    if not (weight is None or number or (isinstance(weight, torch.Tensor) and weight.ndim == 0)):
        raise ConfigError(
            f"task.target: the task of {target!r} returned loss_weight of {_form(weight)}; "
            "the trainer needs what the loss's mean divides by, a number or a 0-dim tensor"
        )
    own = {f"val_{name}" for name in out.metrics} | {"val_loss"}
    for clash in sorted(own & {f"val_{name}" for name in config.eval.metrics}):
        raise ConfigError(
            f"eval.metrics: {clash.removeprefix('val_')!r} is a metric the task {target!r} "
            "reports already; give yours another name"
        )
    produced = own | {f"val_{name}" for name in config.eval.metrics}
    for where, name, allowed in (
        ("eval.early_stopping_metric", config.eval.early_stopping_metric, produced),
        ("checkpoint.metric", config.checkpoint.metric, produced | {"train_loss"}),
    ):
        if name is not None and name not in allowed:
            raise ConfigError(
                f"{where}: {name!r} is not a metric the task {target!r} reports in "
                f"evaluation (allowed: {', '.join(sorted(allowed))})"
            )


def _form(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"shape {tuple(value.shape)}"
    return f"type {type(value).__name__}"


def _run_metric(
    config: ExperimentConfig, name: str, fn: MetricFn, model: nn.Module, batch: Any, out: Any
) -> None:
    field = f"eval.metrics.{name}"
    try:
        value = fn(model, batch, out)
    except Exception as exc:  # wrong signature, or it cannot read this task's batches
        raise ConfigError(
            f"{field}: {config.eval.metrics[name]!r} called as fn(model, batch, output) on a "
            f"validation batch fails: {type(exc).__name__}: {exc}"
        ) from exc
    metric_value(field, value)


def _check_top_k(config: ExperimentConfig, model: nn.Module, x: torch.Tensor) -> None:
    """Refuse a top-k the classifier has too few classes for: one in ``task.top_k``, or the
    ``val_top{k}_accuracy`` a run stops early on or keeps checkpoints by. Evaluation reports
    top-k only up to the class count, so such a k would be missing without a word. (The
    default [1, 5] always fits: a classifier of the 10 digits outputs 10 scores or more.)"""
    if config.task.kind != "classification":
        return
    wanted = {
        "eval.early_stopping_metric": config.eval.early_stopping_metric,
        "checkpoint.metric": config.checkpoint.metric,
    }
    ks = {
        where: int(found.group(1))
        for where, name in wanted.items()
        if name and (found := re.fullmatch(r"val_top(\d+)_accuracy", name))
    }
    if config.task.top_k:
        ks["task.top_k"] = max(config.task.top_k)
    if not ks:
        return
    classes = model(x).shape[-1]
    source = (
        repr(config.model.target) if isinstance(config.model, ImportedModelConfig) else "the model"
    )
    for where, k in ks.items():
        if k <= classes:
            continue
        if where == "task.top_k":
            raise ConfigError(
                f"task.top_k: {k} is more than the {classes} classes {source} outputs, so "
                f"val_top{k}_accuracy could never be reported (allowed: 1 to {classes})"
            )
        raise ConfigError(
            f"{where}: 'val_top{k}_accuracy' needs more than the {classes} classes "
            f"{source} outputs (allowed: val_top2_accuracy up to "
            f"val_top{classes}_accuracy, val_accuracy, val_loss)"
        )
