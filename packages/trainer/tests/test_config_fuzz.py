"""Bad configs, made at random from good ones: one field of a run that trains is set to a
value of the wrong type or range, or a key is added or a section replaced. ``train`` must
either train (the value was fine) or fail before any file is written with a
``ConfigError`` naming the field (the message holds its section), never with another
exception. The one other ending allowed is a fine value that makes the loss diverge
(``optim.lr = 2**40``): training stops with a ``NonFiniteLossError``, as it should.

The default run tries the same few dozen each time; ``--run-slow`` many more, new ones
each time.
"""

from __future__ import annotations

import copy
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from torchsmith.interfaces import ConfigError
from torchsmith.trainer import ExperimentConfig, NonFiniteLossError, train

from .test_resume_fuzz import TASKS

BAD_VALUES = [-1, 0, 1, 2.5, -0.5, "x", "", None, [], {}, [0], {"a": 1}, True, False,
              math.nan, math.inf, 2**40, "1e-3", [1, "a"]]  # fmt: skip


def _base(task: str) -> dict[str, Any]:
    return {
        **copy.deepcopy(TASKS[task]),
        "loader": {"batch_size": 16},
        "training": {"max_steps": 2, "log_every": 1, "device": "cpu"},
        "eval": {"every_steps": 1, "max_batches": 1},
        "checkpoint": {"metric": "val_loss"},
    }


def _leaves(config: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        paths += _leaves(value, f"{path}.") if isinstance(value, dict) else [path]
    return paths


_DEFAULTS = ExperimentConfig()  # every field a config has, with the base's own


@st.composite
def bad_configs(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A config with one thing changed, and the dotted path of what changed."""
    task = draw(st.sampled_from(sorted(TASKS)))
    config = _base(task)
    fields = sorted(set(_leaves(_DEFAULTS.model_dump())) | set(_leaves(config)))
    fields = [f for f in fields if f not in ("out_dir", "data.paths")]  # no file writes
    how = draw(st.sampled_from(["value", "value", "value", "unknown key", "section"]))
    if how == "unknown key":
        section = draw(st.sampled_from(sorted({f.split(".")[0] for f in fields if "." in f})))
        path = f"{section}.no_such_field"
    elif how == "section":
        path = draw(st.sampled_from(sorted({f.split(".")[0] for f in fields if "." in f})))
    else:
        path = draw(st.sampled_from(fields))
    node = config
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    # Fields where a valid value may ask for hours of work (a step of 2**40 micro-batches):
    # only wrong ones here.
    long = path in ("training.grad_accum", "eval.sample_tokens", "training.compile")
    node[last] = draw(st.sampled_from(["x", -1, None, []] if long else BAD_VALUES))
    return config, path


def _check(tmp: Path, config: dict[str, Any], path: str) -> None:
    note(f"{path} = {config}")
    out = tmp / "run"
    refused: ConfigError | None = None
    try:
        train(config, out_dir=out, max_steps=2)
        event("trained")
    except ConfigError as exc:
        refused = exc
        event("refused")
    except NonFiniteLossError:
        event("diverged")
    finally:  # the examples share tmp: what one leaves must not fail the next
        written = out.exists()
        shutil.rmtree(out, ignore_errors=True)
    if refused is not None:
        assert path.split(".")[0] in str(refused), str(refused)
        assert not written, "a ConfigError after a file was written"


_examples: dict[str, Any] = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@settings(max_examples=40, derandomize=True, **_examples)  # the same 40 on every run
@given(case=bad_configs())
def test_a_bad_config_is_a_config_error_naming_the_field(tmp_path: Path, case: Any) -> None:
    _check(tmp_path, *case)


@pytest.mark.slow
@settings(max_examples=600, **_examples)
@given(case=bad_configs())
def test_many_bad_configs(tmp_path: Path, case: Any) -> None:
    _check(tmp_path, *case)
