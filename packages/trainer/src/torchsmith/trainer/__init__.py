"""torchsmith.trainer

A thin, fast, composable PyTorch training loop: AMP, accumulation, exact resume, DDP.
"""

from __future__ import annotations

from importlib.metadata import version as _version

from torchsmith.interfaces import require_interfaces

INTERFACES_MAJOR = 1
require_interfaces("torchsmith-trainer", INTERFACES_MAJOR)

__version__ = _version("torchsmith-trainer")

__all__ = ["INTERFACES_MAJOR", "__version__"]
