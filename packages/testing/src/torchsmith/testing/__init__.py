"""torchsmith.testing

A pytest plugin for testing PyTorch models, with hardware detection.
"""

from __future__ import annotations

from importlib.metadata import version as _version

from torchsmith.interfaces import require_interfaces

INTERFACES_MAJOR = 1
require_interfaces("torchsmith-testing", INTERFACES_MAJOR)

__version__ = _version("torchsmith-testing")

__all__ = ["INTERFACES_MAJOR", "__version__"]
