"""ModelTest checks of saving: a safetensors round trip, and a load in a fresh process."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from ._asserts import assert_close_tensors
from ._harness import OTHER_INIT_SEED_OFFSET, build_inputs, build_model, main_output

if TYPE_CHECKING:
    from ._model_test import ModelTest


def check_safetensors(test: ModelTest, device: torch.device, directory: Path) -> None:
    """5. state_dict -> safetensors -> a freshly built model: outputs are identical."""
    model = build_model(test, device).eval()
    inputs = build_inputs(test, device)
    expected = main_output(test, model, inputs)
    path = directory / "model.safetensors"
    _refuse_extra_state(model)
    save_model(model, str(path))  # handles tied weights, unlike save_file(state_dict)
    other = build_model(test, device, seed_offset=OTHER_INIT_SEED_OFFSET).eval()
    missing, unexpected = load_model(other, str(path), strict=False, device=str(device))
    if missing or unexpected:
        raise AssertionError(
            f"the saved state_dict does not fit a freshly built model: missing keys "
            f"{sorted(missing)[:8]}, unexpected keys {sorted(unexpected)[:8]}"
        )
    actual = main_output(test, other, inputs)
    assert_close_tensors(actual, expected, rtol=0.0, atol=0.0, name="output after reload")


def _refuse_extra_state(model: torch.nn.Module) -> None:
    """safetensors holds tensors only: name the module whose ``get_extra_state`` gives
    something else, rather than fail inside safetensors on it."""
    for name, module in model.named_modules():
        if type(module).get_extra_state is not torch.nn.Module.get_extra_state:
            extra = module.get_extra_state()
            if not isinstance(extra, torch.Tensor):
                where = name or type(module).__name__
                raise AssertionError(
                    f"module {where!r} keeps extra state (get_extra_state returns a "
                    f"{type(extra).__name__}), which safetensors cannot hold: tensors only"
                )


def check_fresh_process(test: ModelTest, device: torch.device, directory: Path) -> None:
    """6. save here, load in a new Python process: the output there is identical."""
    cls = type(test)
    if "<locals>" in cls.__qualname__:
        pytest.skip(
            f"{cls.__qualname__} is defined inside a function; a fresh process cannot "
            "import it (define the test class at module level)"
        )
    source = inspect.getsourcefile(cls)
    if source is None:
        pytest.skip(f"the source file of {cls.__qualname__} is unknown")
    inputs = build_inputs(test, device)
    tensors = {k: v.contiguous() for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(inputs):
        pytest.skip("make_inputs returns non-tensor values, which safetensors cannot carry")
    model = build_model(test, device).eval()
    expected = main_output(test, model, inputs)
    _refuse_extra_state(model)
    save_model(model, str(directory / "model.safetensors"))
    save_file({k: v.cpu() for k, v in tensors.items()}, str(directory / "inputs.safetensors"))
    _run_child(test, Path(source), cls.__qualname__, device, directory)
    actual = load_file(str(directory / "output.safetensors"))["output"]
    assert_close_tensors(
        actual, expected.cpu(), rtol=0.0, atol=0.0, name="output in a fresh process"
    )


def _run_child(
    test: ModelTest, source: Path, qualname: str, device: torch.device, directory: Path
) -> None:
    env = dict(os.environ)
    # The child must import what this process imports, including the test's own directory.
    paths = [str(source.parent), *sys.path, env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    command = [
        sys.executable,
        "-m",
        "torchsmith.testing._fresh_process",
        str(source),
        qualname,
        str(device),
        str(directory),
    ]
    try:
        done = subprocess.run(
            command,
            env=env,
            capture_output=True,
            text=True,
            timeout=test.fresh_process_timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"the fresh process did not finish within {test.fresh_process_timeout} s"
        ) from None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise AssertionError(f"loading in a fresh process failed (exit {done.returncode}):\n{tail}")
