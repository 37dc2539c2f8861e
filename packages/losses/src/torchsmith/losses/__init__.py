"""torchsmith.losses

A consolidated PyTorch loss library with a registry, verified against reference implementations.
"""

from __future__ import annotations

from importlib.metadata import version as _version

from torchsmith.interfaces import require_interfaces

INTERFACES_MAJOR = 1
require_interfaces("torchsmith-losses", INTERFACES_MAJOR)

__version__ = _version("torchsmith-losses")

__all__ = ["INTERFACES_MAJOR", "__version__"]
