"""Loading an optimizer's, scheduler's or scaler's saved state, checked where torch takes it
as it is and fails only at the next ``step()``, mid-run, with no name for the file."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from torchsmith.interfaces import CheckpointError

_KERNELS = ("fused", "foreach")  # flags that choose a kernel, not the arithmetic

# What restoring a state.pt that this trainer did not write raises (from torch, Python).
RESTORE_ERRORS = (
    KeyError, TypeError, ValueError, IndexError, RuntimeError, OverflowError, AttributeError
)  # fmt: skip


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, saved: Mapping[str, Any], where: str
) -> None:
    """``optimizer.load_state_dict(saved)``, or a CheckpointError naming ``where`` for a
    state its next ``step()`` would fail on: a hyperparameter of another kind than the
    optimizer's own, a flag (``amsgrad``, ``maximize``) that differs from it, or
    per-parameter state that differs between parameters in its keys or kinds (a moment
    missing, or not a float tensor of its parameter's shape)."""
    own = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    optimizer.load_state_dict(dict(saved))  # torch checks the groups' and parameters' counts
    for i, (group, hyper) in enumerate(zip(optimizer.param_groups, own, strict=True)):
        check_same_kinds(group, hyper, where, f"optimizer param_groups[{i}]")
        for key, value in hyper.items():
            if isinstance(value, bool) and key not in _KERNELS and group[key] != value:
                raise CheckpointError(
                    f"{where}: optimizer param_groups[{i}].{key} is {group[key]}, where this "
                    f"optimizer has {value}: its state would not fit the other setting"
                )
    _check_parameter_states(optimizer, saved, where)


def _check_parameter_states(
    optimizer: torch.optim.Optimizer, saved: Mapping[str, Any], where: str
) -> None:
    """Every parameter with saved state has the same keys, each either a step count (a
    number or a one-element tensor) everywhere or a float tensor of its parameter's shape
    everywhere (either fits a one-element parameter). The saved values are checked, not
    what torch loaded: it turns text into other text."""
    first: tuple[str, set[str]] | None = None
    seen: dict[str, tuple[str, str]] = {}  # key -> (kind, the parameter it was seen on)
    for i, group in enumerate(optimizer.param_groups):
        indices = saved["param_groups"][i]["params"]  # as torch maps them when it loads
        for j, (index, param) in enumerate(zip(indices, group["params"], strict=True)):
            state = saved["state"].get(index)
            name = f"parameter {j} in param_groups[{i}]"
            if not isinstance(state, dict):
                if state is None:  # never stepped (no gradient yet): nothing to check
                    continue
                raise CheckpointError(f"{where}: optimizer state of {name} is {_shown(state)}")
            if not state:
                continue
            if first is None:
                first = (name, set(state))
            elif set(state) != first[1]:
                raise CheckpointError(
                    f"{where}: optimizer state of {name} holds {', '.join(sorted(state))}, "
                    f"but of {first[0]} {', '.join(sorted(first[1]))}"
                )
            for key, value in state.items():
                kind = _kind(key, value, param)
                if kind == "other":
                    raise CheckpointError(
                        f"{where}: optimizer state {key!r} of {name} is {_shown(value)}, "
                        "neither a count nor a finite float tensor of the parameter's shape"
                    )
                known, on = seen.setdefault(key, (kind, name))
                if "either" not in (kind, known) and kind != known:
                    raise CheckpointError(
                        f"{where}: optimizer state {key!r} of {name} is {_shown(value)}, "
                        f"but {known} on {on}"
                    )
                if known == "either":
                    seen[key] = (kind, name)


def _kind(key: str, value: Any, param: torch.Tensor) -> str:
    """What ``value`` is as state ``key`` of ``param``; "other" for what no optimizer keeps:
    a NaN or infinite value, or a negative ``step`` (Adam's bias correction would divide by
    zero). Torch's optimizers all call their step count ``step``."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return "other"
        if key == "step":
            return "a count" if value.numel() == 1 and value.item() >= 0 else "other"
        if value.numel() == 1 and param.numel() == 1 and value.is_floating_point():
            return "either"
        if value.shape == param.shape and value.is_floating_point():
            return "a float tensor of its parameter's shape"
        return "a count" if value.numel() == 1 else "other"
    if value is None or _same_kind(value, 0.0):
        if key == "step":
            return "a count" if value is not None and value >= 0 else "other"
        return "either" if param.numel() == 1 else "a count"
    return "other"


def _shown(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return repr(value)[:60]


def check_same_kinds(
    saved: Mapping[str, Any], own: Mapping[str, Any], where: str, what: str
) -> None:
    """A CheckpointError naming ``what.key`` for each value of ``own`` (a fresh object's
    state or settings) whose saved value is missing or of another kind."""
    for key, value in own.items():
        if not _same_kind(saved.get(key), value):
            raise CheckpointError(
                f"{where}: {what}.{key} is {saved.get(key)!r:.60}, where this run has {value!r:.60}"
            )


def _same_kind(value: Any, own: Any) -> bool:
    """Whether a loaded ``value`` is of the kind of ``own``."""
    if own is None or isinstance(own, bool):  # a flag, or a function saved as None
        return value is None or isinstance(value, bool)
    if isinstance(own, int | float):
        return (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        )
    if isinstance(own, tuple | list):  # betas, base_lrs
        return (
            isinstance(value, tuple | list)
            and len(value) == len(own)
            and all(_same_kind(v, o) for v, o in zip(value, own, strict=True))
        )
    if isinstance(own, torch.Tensor):  # a tensor LR (capturable), a scaler's scale
        return isinstance(value, torch.Tensor) and value.numel() == own.numel()
    return type(value) is type(own)
