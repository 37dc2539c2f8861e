"""The interfaces version and the check every suite runs against it.

Rule: a breaking change to a Protocol or a record schema bumps the major
version, and every member is released together against the new major.
Minor versions only add (new optional fields, new Protocols), so a suite built
against 1.2 works with interfaces 1.0 through 1.x.
"""

from __future__ import annotations

from ._errors import InterfacesVersionError

INTERFACES_VERSION = "1.5.1"


def parse_version(version: str) -> tuple[int, int, int]:
    """Split ``"MAJOR.MINOR[.PATCH]"`` into integers; raise ValueError otherwise."""
    parts = version.split(".")
    if not 2 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"version {version!r} is not of the form MAJOR.MINOR[.PATCH]")
    major, minor, *rest = (int(p) for p in parts)
    return major, minor, rest[0] if rest else 0


def interfaces_major() -> int:
    return parse_version(INTERFACES_VERSION)[0]


def require_interfaces(suite: str, major: int) -> None:
    """Refuse to run ``suite``, built against interfaces ``major``, on another major.

    Every suite calls this once at import time, so a mismatched install fails
    at once with one message naming both versions and the fix.
    """
    installed = INTERFACES_VERSION
    if parse_version(installed)[0] != major:
        raise InterfacesVersionError(
            f"{suite} was built against torchsmith-interfaces {major}.x, but "
            f"torchsmith-interfaces {installed} is installed. Install matching versions: "
            f"pip install 'torchsmith-interfaces>={major},<{major + 1}' or upgrade {suite}."
        )
