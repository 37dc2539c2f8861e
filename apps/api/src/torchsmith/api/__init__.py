"""torchsmith.api

The torchsmith service: REST, WebSocket and a dashboard over the suites.
"""

from __future__ import annotations

from importlib.metadata import version as _version

from torchsmith.interfaces import require_interfaces

INTERFACES_MAJOR = 1
require_interfaces("torchsmith-api", INTERFACES_MAJOR)

__version__ = _version("torchsmith-api")

__all__ = ["INTERFACES_MAJOR", "__version__"]
