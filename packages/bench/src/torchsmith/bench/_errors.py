"""torchsmith-bench's errors, all under the shared ``TorchsmithError``.

    TorchsmithError
     ├── StoreError          a bench database that cannot be opened, read or written as asked
     │    └── RunNotFoundError   no run answers a reference (an id, latest~N, a prefix)
     ├── ComparisonError     two runs that cannot be compared as asked (other environments)
     ├── CaseError           a benchmark case that failed in setup, while timed or in a worker
     └── MemoryProbeError    the child process measuring peak RSS failed

Unknown case names raise ``RegistryError``, a newer database schema ``SchemaVersionError``
and bad settings ``ConfigError``, all from torchsmith.interfaces.
"""

from __future__ import annotations

from torchsmith.interfaces import TorchsmithError


class StoreError(TorchsmithError):
    """A bench database that cannot be opened, read or written as asked."""


class RunNotFoundError(StoreError, LookupError):
    """No run of a bench database answers ``reference``; the message names the database,
    ``reference`` alone is what a server may show its clients."""

    def __init__(self, message: str, reference: str) -> None:
        super().__init__(message)
        self.reference = reference


class ComparisonError(TorchsmithError):
    """Two runs that cannot be compared as asked (e.g. different environments)."""


class CaseError(TorchsmithError):
    """A benchmark case failed in its setup, while being timed, or in a worker process."""


class MemoryProbeError(TorchsmithError):
    """The child process measuring peak RSS failed."""
