"""Loading an optimizer's, scheduler's or scaler's saved state, checked where torch takes it
as it is and fails only at the next ``step()``, mid-run, with no name for the file."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from torchsmith.interfaces import CheckpointError

_KERNELS = ("fused", "foreach")  # flags that choose a kernel, not the arithmetic

# Optimizers whose per-parameter state has one layout within a group: a step count and
# tensors of the parameter's shape (SGD's momentum buffer may be None: it starts one then).
# Others, such as Adafactor's factored moments or LBFGS's history, keep state of other
# shapes; only its form is checked.
_ELEMENTWISE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD, torch.optim.RMSprop)

# What restoring a state.pt that this trainer did not write raises (from torch, Python).
RESTORE_ERRORS = (
    KeyError, TypeError, ValueError, IndexError, RuntimeError, OverflowError, AttributeError
)  # fmt: skip


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, saved: Mapping[str, Any], where: str
) -> None:
    """``optimizer.load_state_dict(saved)``, or a CheckpointError naming ``where`` (and the
    optimizer as it was) for a state its next ``step()`` would fail on: a hyperparameter of
    another kind than the optimizer's own, a flag (``amsgrad``) that differs from it, a
    parameter's state that is not a mapping or whose ``step`` is not a count; and for Adam,
    AdamW, SGD and RMSprop, a parameter whose moments differ from its group's others in
    their keys, are not tensors of its shape (None is SGD's only), or hold NaN.

    The checks run on what torch loaded, which fills in flags that older versions did not
    save (``decoupled_weight_decay``), and on the saved values where torch would turn them
    into something else (it makes other text of a string)."""
    own = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    before = optimizer.state_dict()  # references, not copies: a fresh optimizer's is empty
    optimizer.load_state_dict(dict(saved))  # torch checks the groups' and parameters' counts
    try:
        for i, (group, hyper) in enumerate(zip(optimizer.param_groups, own, strict=True)):
            _check_hyperparameters(group, hyper, where, f"optimizer param_groups[{i}]")
            _check_parameter_states(optimizer, saved, i, where)
    except CheckpointError:
        optimizer.load_state_dict(before)
        raise


def _check_hyperparameters(
    group: Mapping[str, Any], own: Mapping[str, Any], where: str, what: str
) -> None:
    check_same_kinds(group, own, where, what)
    for key, value in own.items():
        if isinstance(value, bool) and key not in _KERNELS and group[key] != value:
            raise CheckpointError(
                f"{where}: {what}.{key} is {group[key]}, where this run has {value}"
            )


def _check_parameter_states(
    optimizer: torch.optim.Optimizer, saved: Mapping[str, Any], i: int, where: str
) -> None:
    """The saved state of each parameter of group ``i`` (see :func:`load_optimizer_state`)."""
    group = optimizer.param_groups[i]
    elementwise = isinstance(optimizer, _ELEMENTWISE)
    none_ok = isinstance(optimizer, torch.optim.SGD)
    first: tuple[str, dict[str, str]] | None = None
    indices = saved["param_groups"][i]["params"]  # as torch maps them when it loads
    for j, (index, param) in enumerate(zip(indices, group["params"], strict=True)):
        state = saved["state"].get(index)
        name = f"parameter {j} in param_groups[{i}]"
        if state is None:  # never stepped (no gradient yet)
            continue
        if not isinstance(state, Mapping):
            raise CheckpointError(f"{where}: optimizer state of {name} is {_shown(state)}")
        if "step" in state and not _is_count(state["step"]):
            raise CheckpointError(
                f"{where}: optimizer state 'step' of {name} is {_shown(state['step'])}, "
                "not a count (a non-negative number)"
            )
        if not elementwise or not state:
            continue
        kinds = {k: _kind(v, param, none_ok) for k, v in state.items() if k != "step"}
        for key, kind in kinds.items():
            if kind == "other":
                raise CheckpointError(
                    f"{where}: optimizer state {key!r} of {name} is {_shown(state[key])}, "
                    "not a tensor of the parameter's shape without NaN"
                )
        if first is None:
            first = (name, kinds)
        elif not _agree(kinds, first[1]):
            raise CheckpointError(
                f"{where}: optimizer state of {name} is {_listed(kinds)}, but of {first[0]} "
                f"{_listed(first[1])}"
            )


def _is_count(value: Any) -> bool:
    """A step count: a non-negative number or one-element tensor (Adam divides by
    ``1 - beta ** step``, which is zero at a step count of -1 plus the step it adds)."""
    if isinstance(value, torch.Tensor):
        return value.numel() == 1 and not value.is_complex() and bool(value.item() >= 0)
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _kind(value: Any, param: torch.Tensor, none_ok: bool) -> str:
    """``value`` as (non-step) state of ``param``: "a tensor of its parameter's shape",
    "either" (None, where ``none_ok``: SGD starts a momentum buffer where it finds none), or
    "other" (a number, None elsewhere, another shape, NaN: the step would fail on it)."""
    if isinstance(value, torch.Tensor) and value.shape == param.shape:
        if (value.is_floating_point() or value.is_complex()) and bool(value.isnan().any()):
            return "other"  # (inf is left: an fp16 moment may overflow and torch goes on)
        return "a tensor of its parameter's shape"
    return "either" if value is None and none_ok else "other"


def _agree(kinds: Mapping[str, str], others: Mapping[str, str]) -> bool:
    return kinds.keys() == others.keys() and all(
        "either" in (kind, others[key]) or kind == others[key] for key, kind in kinds.items()
    )


def _listed(kinds: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{key}: {kind}" for key, kind in sorted(kinds.items())) + "}"


def _shown(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        nan = " holding NaN" if value.is_floating_point() and bool(value.isnan().any()) else ""
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}{nan}"
    return repr(value)[:60]


def check_same_kinds(
    saved: Mapping[str, Any],
    own: Mapping[str, Any],
    where: str,
    what: str,
    *,
    private_optional: bool = False,
) -> None:
    """A CheckpointError naming ``what.key`` for each value of ``own`` (a fresh object's
    state or settings) whose saved value is missing or of another kind.

    ``private_optional``: a missing ``_key`` is no error. A scheduler's private bookkeeping
    (``_is_initial``) comes and goes between torch versions, and its ``load_state_dict``
    keeps the fresh object's value for a key the state lacks."""
    for key, value in own.items():
        if key not in saved:
            if private_optional and key.startswith("_"):
                continue
            raise CheckpointError(f"{where}: {what} has no {key!r}, which this run's has")
        if not _same_kind(saved[key], value):
            raise CheckpointError(
                f"{where}: {what}.{key} is {saved[key]!r:.60}, where this run has {value!r:.60}"
            )


def _same_kind(value: Any, own: Any) -> bool:
    """Whether a loaded ``value`` is of the kind of ``own``."""
    if own is None or isinstance(own, bool):  # a flag, or a function saved as None
        return value is None or isinstance(value, bool)
    if isinstance(own, int | float):  # finite where this run's is (ReduceLROnPlateau: inf)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return number and (math.isfinite(value) or not math.isfinite(own))
    if isinstance(own, tuple | list):  # betas, base_lrs
        return (
            isinstance(value, tuple | list)
            and len(value) == len(own)
            and all(_same_kind(v, o) for v, o in zip(value, own, strict=True))
        )
    if isinstance(own, torch.Tensor):  # a tensor LR (capturable), a scaler's scale
        return isinstance(value, torch.Tensor) and value.numel() == own.numel()
    return type(value) is type(own)
