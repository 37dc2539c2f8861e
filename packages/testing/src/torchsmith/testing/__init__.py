"""torchsmith.testing

A pytest plugin that tests any PyTorch model the way transformers tests its own, plus
hardware detection. Installing the package registers the plugin (entry point ``pytest11``).
"""

from __future__ import annotations

from importlib.metadata import version as _version

from torchsmith.interfaces import require_interfaces

INTERFACES_MAJOR = 1
require_interfaces("torchsmith-testing", INTERFACES_MAJOR)

__version__ = _version("torchsmith-testing")

from ._asserts import (  # noqa: E402  (after the interfaces check, on purpose)
    DTYPE_TOLERANCES,
    assert_close_tensors,
    assert_finite,
    count_parameters,
    tolerance_for,
)
from ._device import DEVICE_ENV, best_device  # noqa: E402
from ._hardware import CAPABILITIES, detect_hardware  # noqa: E402
from ._loss_test import LossTest, add_constant, permute_batch, scale_input  # noqa: E402
from ._model_test import CHECK_METHODS, ModelTest  # noqa: E402
from ._outputs import main_tensor  # noqa: E402
from ._report import CheckResult, ModelReport, SuiteReport, read_report  # noqa: E402
from ._seed import seed_everything, seeded  # noqa: E402

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
]
