"""Advice on a valid config: what a resume must keep from its checkpoint, and settings
that do nothing in the run as planned."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._config import ExperimentConfig

# What a checkpoint fixes: its weights, optimizer state, RNGs and data position mean
# something only with these. (A resume restores the optimizer's own settings from the
# checkpoint, so a changed optim.lr would be silently ignored.)
_FIXED_ON_RESUME = (
    "seed",
    "model.",
    "data.",
    "task.",
    "optim.",
    "schedule.",  # LambdaLR's state is its step count: a changed plan would apply silently
    "loader.batch_size",
    "loader.shuffle",  # the rest of the epoch would come from another order
    "training.grad_accum",
    "training.clip_grad_norm",
    "training.precision",
    "training.compile",  # inductor's kernels round differently from eager ones
)


def resume_mismatches(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The settings a checkpoint fixes that differ between its config (``saved``, from
    meta.json) and ``current``, as ``"field: checkpoint X, this run Y"`` lines. Fields one
    side lacks (added in a later version) are not compared."""
    old, new = _flatten(saved), _flatten(current)
    return [
        f"{key}: checkpoint {old[key]!r}, this run {new[key]!r}"
        for key in sorted(old.keys() & new.keys())
        if key.startswith(_FIXED_ON_RESUME) and old[key] != new[key]
    ]


def resume_warnings(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Changes a resume may make, said out loud because they may not be meant:

    - another ``training.max_steps`` under a linear or cosine schedule re-plans the LR
      decay from here (extending a run is allowed; forgetting the ``--set`` that planned
      it looks the same);
    - going between no DataLoader workers and some moves a dataset's own random draws from
      the main process's RNG streams to per-batch seeds (:class:`BatchSeeded`). A dataset
      that draws nothing, as every built-in one, is not affected."""
    old, new = _flatten(saved), _flatten(current)
    lines = []
    steps = (old.get("training.max_steps"), new.get("training.max_steps"))
    decaying = new.get("schedule.name") in ("linear", "cosine")
    if decaying and None not in steps and steps[0] != steps[1]:
        lines.append(
            f"training.max_steps: checkpoint {steps[0]}, this run {steps[1]}: the "
            f"{new['schedule.name']} LR schedule decays over it, so it is re-planned from "
            f"here; --set training.max_steps={steps[0]} continues the checkpoint's plan"
        )
    before, after = _workers(saved), _workers(current)
    if before is not None and after is not None and (before > 0) != (after > 0):
        lines.append(
            f"loader.num_workers: checkpoint {before}, this run {after}: random numbers a "
            "dataset draws as it reads come from the main process's RNGs with 0 workers and "
            "from per-batch seeds with workers, so such a dataset will not resume exactly"
        )
    return lines


def _workers(config: Mapping[str, Any]) -> int | None:
    """``loader.num_workers``, or None where a checkpoint's config (read from its
    meta.json, which a hand or a disk may have damaged) holds no such number."""
    loader = config.get("loader")
    workers = loader.get("num_workers") if isinstance(loader, Mapping) else None
    return workers if isinstance(workers, int) and not isinstance(workers, bool) else None


_WHOLE = ("kwargs", "loss_kwargs")  # free-form maps: a key added or dropped is a change


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and value and key not in _WHOLE:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def plan_warnings(config: ExperimentConfig) -> list[str]:
    """Settings that do nothing in this run: a warmup or LR decay that never happens, early
    stopping with too few evaluations to fire. ``build_trainer`` warns of each, once; they
    are not errors, since a short smoke run of a long recipe is a fair thing to ask."""
    found = []
    sched, steps = config.schedule, config.training.max_steps
    if sched.warmup_steps >= steps:
        # The warmup's factor at step s is (s + 1) / warmup_steps: 1 at the last step, if equal.
        reach = "never reaches" if sched.warmup_steps > steps else "reaches only at the last step"
        found.append(
            f"schedule.warmup_steps: {sched.warmup_steps} is not below training.max_steps "
            f"({steps}), so the LR {reach} optim.lr and the {sched.name!r} decay never starts"
        )
    elif sched.name == "step" and sched.step_size >= steps - sched.warmup_steps:
        found.append(
            f"schedule.step_size: {sched.step_size} is not below the {steps - sched.warmup_steps}"
            " steps after warmup, so the 'step' schedule never decays the LR"
        )
    ev = config.eval
    if ev.sample_tokens and config.data.kind == "import" and config.task.kind == "causal_lm":
        found.append(
            f"eval.sample_tokens: {ev.sample_tokens}, but imported data has no tokenizer to "
            "turn samples into text, so none is sampled"
        )
    if ev.early_stopping_metric and ev.every_steps and not ev.every_epochs:
        evaluations = steps // ev.every_steps
        if evaluations <= ev.patience:
            found.append(
                f"eval.patience: early stopping needs {ev.patience + 1} evaluations to stop, "
                f"and eval.every_steps={ev.every_steps} gives {evaluations} in "
                f"training.max_steps={steps}, so it never stops the run"
            )
    return found
