"""torchsmith.generator

Jinja2 templates that emit runnable PyTorch model code, its tests and its benchmark.
"""

from __future__ import annotations

from importlib.metadata import version as _version

from torchsmith.interfaces import require_interfaces

INTERFACES_MAJOR = 1
require_interfaces("torchsmith-generator", INTERFACES_MAJOR)

__version__ = _version("torchsmith-generator")

__all__ = ["INTERFACES_MAJOR", "__version__"]
