"""Lazy access to the suites, so the server starts fast and a missing suite is a clear 501."""

from __future__ import annotations

import gc
import importlib
import importlib.util
from importlib import metadata
from types import ModuleType

from torchsmith.interfaces import MissingSuiteError

_frozen: set[str] = set()
SUITES = {
    "trainer": "torchsmith-trainer",
    "losses": "torchsmith-losses",
    "generator": "torchsmith-generator",
    "bench": "torchsmith-bench",
    "testing": "torchsmith-testing",
}


def suite(name: str, *needs: str) -> ModuleType:
    """``torchsmith.<name>``, checked to provide ``needs``; MissingSuiteError naming the fix."""
    dist = SUITES[name]
    try:
        module = importlib.import_module(f"torchsmith.{name}")
    except ImportError as exc:
        raise MissingSuiteError(
            f"this route needs {dist}, which is not installed ({exc}): pip install {dist}"
        ) from exc
    if name not in _frozen:
        # A suite brings torch and its millions of objects into the server; frozen, they
        # leave the collector's full passes, which otherwise stall requests for 100s of ms.
        _frozen.add(name)
        gc.freeze()
    missing = [attr for attr in needs if not hasattr(module, attr)]
    if missing:
        raise MissingSuiteError(
            f"the installed {dist} {_version(dist)} does not provide "
            f"torchsmith.{name}.{', '.join(missing)}, which this route needs: "
            f"pip install -U {dist}"
        )
    return module


def installed() -> dict[str, str | None]:
    """Suite name -> installed version, or None; imports nothing."""
    found: dict[str, str | None] = {}
    for name, dist in SUITES.items():
        spec = importlib.util.find_spec(f"torchsmith.{name}")
        found[name] = _version(dist) if spec is not None else None
    return found


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "(unknown version)"
