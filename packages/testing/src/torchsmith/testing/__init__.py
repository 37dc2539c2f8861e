"""torchsmith.testing

A pytest plugin that tests any PyTorch model the way transformers tests its own, plus
hardware detection. Installing the package registers the plugin (entry point ``pytest11``).

The public names load on first use: pytest imports this package for its plugin in every
run, and a run that never touches a model should not pay for importing torch.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import version as _version
from typing import TYPE_CHECKING, Any

from torchsmith.interfaces import require_interfaces

INTERFACES_MAJOR = 1
require_interfaces("torchsmith-testing", INTERFACES_MAJOR)

__version__ = _version("torchsmith-testing")

if TYPE_CHECKING:
    from ._asserts import (
        DTYPE_TOLERANCES,
        assert_close_tensors,
        assert_finite,
        count_parameters,
        tolerance_for,
    )
    from ._device import DEVICE_ENV, best_device
    from ._hardware import CAPABILITIES, detect_hardware
    from ._loss_test import LOSS_CHECK_METHODS, LossTest, add_constant, permute_batch, scale_input
    from ._model_test import CHECK_METHODS, ModelTest
    from ._outputs import main_tensor
    from ._report import CheckResult, ModelReport, SuiteReport, read_report
    from ._runner import run_model_tests
    from ._seed import seed_everything, seeded

_LAZY = {
    "DTYPE_TOLERANCES": "_asserts",
    "assert_close_tensors": "_asserts",
    "assert_finite": "_asserts",
    "count_parameters": "_asserts",
    "tolerance_for": "_asserts",
    "DEVICE_ENV": "_device",
    "best_device": "_device",
    "CAPABILITIES": "_hardware",
    "detect_hardware": "_hardware",
    "LOSS_CHECK_METHODS": "_loss_test",
    "LossTest": "_loss_test",
    "add_constant": "_loss_test",
    "permute_batch": "_loss_test",
    "scale_input": "_loss_test",
    "CHECK_METHODS": "_model_test",
    "ModelTest": "_model_test",
    "main_tensor": "_outputs",
    "CheckResult": "_report",
    "ModelReport": "_report",
    "SuiteReport": "_report",
    "read_report": "_report",
    "run_model_tests": "_runner",
    "seed_everything": "_seed",
    "seeded": "_seed",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    # version
    "INTERFACES_MAJOR",
    "__version__",
    # hardware and devices
    "CAPABILITIES",
    "DEVICE_ENV",
    "best_device",
    "detect_hardware",
    # base classes and their helpers
    "CHECK_METHODS",
    "LOSS_CHECK_METHODS",
    "ModelTest",
    "LossTest",
    "add_constant",
    "permute_batch",
    "scale_input",
    "main_tensor",
    # assertions
    "DTYPE_TOLERANCES",
    "assert_close_tensors",
    "assert_finite",
    "count_parameters",
    "tolerance_for",
    # seeding
    "seed_everything",
    "seeded",
    # reports
    "CheckResult",
    "ModelReport",
    "SuiteReport",
    "read_report",
    "run_model_tests",
]
