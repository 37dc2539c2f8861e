"""torchsmith.api

The torchsmith service: REST, WebSocket and a dashboard over the suites.

    from torchsmith.api import Settings, create_app
    app = create_app(Settings(data_dir="runs/service"))   # serve with uvicorn

or from a shell: ``torchsmith serve`` (see ``torchsmith serve --help``).
Importing this package is cheap: FastAPI, DuckDB and the suites load on first use.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import version as _version
from typing import TYPE_CHECKING, Any

from torchsmith.interfaces import require_interfaces

INTERFACES_MAJOR = 1
require_interfaces("torchsmith-api", INTERFACES_MAJOR)

__version__ = _version("torchsmith-api")

if TYPE_CHECKING:
    from ._app import API_PREFIX, create_app
    from ._hub import EventHub
    from ._jobs import JobManager, JobNotFoundError
    from ._keys import ApiKey, KeyStore
    from ._settings import Settings
    from ._worker import JobContext

_LAZY = {
    "API_PREFIX": "._app",
    "create_app": "._app",
    "Settings": "._settings",
    "JobManager": "._jobs",
    "JobNotFoundError": "._jobs",
    "JobContext": "._worker",
    "EventHub": "._hub",
    "ApiKey": "._keys",
    "KeyStore": "._keys",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    # version
    "INTERFACES_MAJOR",
    "__version__",
    # the app
    "API_PREFIX",
    "create_app",
    "Settings",
    # jobs
    "JobManager",
    "JobContext",
    "JobNotFoundError",
    "EventHub",
    # keys
    "ApiKey",
    "KeyStore",
]
