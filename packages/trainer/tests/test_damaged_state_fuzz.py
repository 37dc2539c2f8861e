"""A checkpoint damaged in its structure, at random: one value of a real ``state.pt`` (the
optimizer's groups and moments, the scheduler, the RNGs, the data position, the loop) or of
``meta.json`` replaced by a value of another type, shape or range, or deleted, or one entry
of ``model.safetensors``'s header changed. ``train(..., resume="latest")`` must either
resume and finish, or stop with a ``TorchsmithError`` naming the checkpoint before it
trains a step: never a traceback from inside torch at some later step.

The default run tries the same few dozen each time; ``--run-slow`` many more, new ones
each time.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from torchsmith.interfaces import TorchsmithError
from torchsmith.trainer import train

from .test_resume_fuzz import TASKS

BAD = [None, "x", -1, 10**12, 1.5, float("nan"), [], {}, True]


def _config(task: str) -> dict[str, Any]:
    return {
        **copy.deepcopy(TASKS[task]),
        "loader": {"batch_size": 16},
        "training": {"max_steps": 6, "log_every": 2, "device": "cpu"},
        "eval": {"every_steps": 3, "max_batches": 1},
        "schedule": {"name": "cosine", "warmup_steps": 2},
        "checkpoint": {"metric": "val_loss", "keep_best": 1},
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One run per task, stopped at step 3 with a checkpoint."""
    root = tmp_path_factory.mktemp("good")
    for task in TASKS:
        train(_config(task), out_dir=root / task, max_steps=3, progress=False)
    return {task: root / task for task in TASKS}


def _leaves(tree: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if path:
        yield path, tree
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from _leaves(value, (*path, index))


def _bad_values(value: Any) -> list[Any]:
    """Values of another type, range or shape than ``value``."""
    bad = list(BAD)
    if isinstance(value, torch.Tensor):
        other = torch.float64 if value.dtype == torch.float32 else torch.float32
        bad += [torch.zeros(3), value.to(other), value.reshape(-1)[:1].clone(), value[None]]
        bad += [torch.full_like(value, float("nan")) if value.is_floating_point() else value + 9]
    elif isinstance(value, int) and not isinstance(value, bool):
        bad += [value + 1, value - 1, -value - 5, value * 1000 + 7]
    return bad


def _set(tree: Any, path: tuple[Any, ...], value: Any, delete: bool) -> None:
    for key in path[:-1]:
        tree = tree[key]
    if delete:
        del tree[path[-1]]
    else:
        tree[path[-1]] = value


def _damage_tree(data: st.DataObject, tree: Any, skip: tuple[str, ...] = ()) -> str:
    values = {p: v for p, v in _leaves(tree) if p[0] not in skip}
    path = data.draw(st.sampled_from(list(values)), label="path")
    value = values[path]
    delete = data.draw(st.sampled_from([False, False, False, True]), label="delete")
    new = None if delete else data.draw(st.sampled_from(_bad_values(value)), label="value")
    _set(tree, path, new, delete)
    return f"{path}: {'deleted' if delete else repr(new)[:80]}"


def _damage_header(data: st.DataObject, file: Path) -> str:
    raw = file.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    name = data.draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
    field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
    header[name][field] = data.draw(
        st.sampled_from([None, "F16", "I64", "x", [1], [2, 3], [0, 10**12], [-1, 4]])
    )
    text = json.dumps(header).encode()
    file.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + size :])
    return f"model.safetensors {name}.{field} = {header[name][field]!r}"


def _check(runs: dict[str, Path], tmp: Path, data: st.DataObject) -> None:
    task = data.draw(st.sampled_from(sorted(runs)), label="task")
    out = tmp / "run"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(runs[task], out, symlinks=True)
    checkpoint = out / "checkpoints" / "latest"
    part = data.draw(st.sampled_from(["state.pt"] * 3 + ["meta.json", "model.safetensors"]))
    if part == "state.pt":
        state = torch.load(checkpoint / part, weights_only=True)
        change = _damage_tree(data, state, skip=("model",))
        torch.save(state, checkpoint / part)
    elif part == "meta.json":
        meta = json.loads((checkpoint / part).read_text())
        change = _damage_tree(data, meta)
        (checkpoint / part).write_text(json.dumps(meta))
    else:
        change = _damage_header(data, checkpoint / part)
    note(f"{task}, {part} {change}")
    refused: TorchsmithError | None = None
    try:
        train(_config(task), out_dir=out, resume="latest", progress=False)
    except TorchsmithError as exc:
        refused = exc
    event("resumed" if refused is None else f"refused: {type(refused).__name__}")
    if refused is not None:
        assert "step-00000003" in str(refused) or "latest" in str(refused), str(refused)


_examples: dict[str, Any] = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@settings(max_examples=25, derandomize=True, **_examples)  # the same 25 on every run
@given(data=st.data())
def test_a_checkpoint_damaged_at_random_resumes_or_is_refused_by_name(
    runs: dict[str, Path], tmp_path: Path, data: st.DataObject
) -> None:
    _check(runs, tmp_path, data)


@pytest.mark.slow
@settings(max_examples=400, **_examples)
@given(data=st.data())
def test_many_damaged_checkpoints(
    runs: dict[str, Path], tmp_path: Path, data: st.DataObject
) -> None:
    _check(runs, tmp_path, data)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("optimizer", "state", 0, "exp_avg"), "x",
         r"optimizer state 'exp_avg' of parameter 0 in param_groups\[0\] is 'x', not a "
         r"tensor of the parameter's shape without NaN"),
        (("optimizer", "state", 2, "exp_avg"), 2.0,
         r"'exp_avg' of parameter 0 in param_groups\[1\] is 2.0, not a tensor of the"),
        # Found by the search: Adam's moment as None (torch fails at the step, TypeError).
        (("optimizer", "state", 0, "exp_avg"), None,
         r"'exp_avg' of parameter 0 in param_groups\[0\] is None, not a tensor of the"),
        (("optimizer", "state", 1, "step"), torch.tensor(-1.0), r"'step' of parameter 1 in"),
        (("optimizer", "state", 0, "exp_avg_sq"), torch.zeros(3),
         r"a torch.float32 tensor of shape \(3,\), not a tensor"),
        (("optimizer", "state", 0, "exp_avg_sq"), None, r"of parameter 0 in param_groups\[0\] "
         r"\{exp_avg: a tensor of its parameter's shape\}$"),
        (("optimizer", "state", 3), [], r"optimizer state of parameter 1 in param_groups\[1\] is"),
        (("optimizer", "param_groups", 0, "weight_decay"), [],
         r"optimizer param_groups\[0\]\.weight_decay is \[\], where this run has 0\.01"),
        (("optimizer", "param_groups", 1, "amsgrad"), True,
         r"param_groups\[1\]\.amsgrad is True, where this run has False$"),
        (("scheduler", "_step_count"), [], r"state\.pt: scheduler\._step_count is \[\], where"),
        (("optimizer", "state"), None, r"cannot restore .*step-00000003.*: AttributeError"),
        (("rng", 0, "python", 1, 0), -5, r"cannot restore .*step-00000003.*: OverflowError"),
    ],
)  # fmt: skip
def test_a_damaged_optimizer_or_scheduler_state_is_refused_before_a_step(
    runs: dict[str, Path], tmp_path: Path, path: tuple[Any, ...], value: Any, message: str
) -> None:
    """Torch takes these as they are and fails at the next ``step()`` (or a schedule's),
    mid-run, naming no file; a resume names the checkpoint and the value instead."""
    out = tmp_path / "run"
    shutil.copytree(runs["classification"], out, symlinks=True)
    file = out / "checkpoints" / "latest" / "state.pt"
    state = torch.load(file, weights_only=True)
    _set(state, path, value, delete=value is None and path[-1] == "exp_avg_sq")
    torch.save(state, file)
    with pytest.raises(TorchsmithError, match=message):
        train(_config("classification"), out_dir=out, resume="latest", progress=False)
