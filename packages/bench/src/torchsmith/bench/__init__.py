"""torchsmith.bench

PyTorch benchmarks with sound statistics, DuckDB history and CI reports.
"""

from __future__ import annotations

from importlib.metadata import version as _version

from torchsmith.interfaces import require_interfaces

INTERFACES_MAJOR = 1
require_interfaces("torchsmith-bench", INTERFACES_MAJOR)

__version__ = _version("torchsmith-bench")

__all__ = ["INTERFACES_MAJOR", "__version__"]
