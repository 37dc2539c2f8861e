"""The exception tree shared by every torchsmith suite.

    TorchsmithError
     ├── ConfigError            invalid configuration or spec (names the field)
     ├── DataError              a batch, dataset or input of the wrong shape or type
     ├── CheckpointError        a checkpoint that cannot be written, found or read
     ├── SchemaVersionError     a record written by a newer, incompatible schema
     ├── InterfacesVersionError a suite built against another interfaces major
     ├── RegistryError          an unknown or duplicate registered name
     └── MissingSuiteError      a command or extra whose suite is not installed

Suites subclass these for their own cases; users catch ``TorchsmithError``.
"""

from __future__ import annotations


class TorchsmithError(Exception):
    """Root of every error raised on purpose by a torchsmith suite."""


class ConfigError(TorchsmithError, ValueError):
    """A configuration value or spec is invalid; the message names the field."""


class DataError(TorchsmithError, ValueError):
    """Input data has the wrong shape, dtype or structure."""


class CheckpointError(TorchsmithError):
    """A checkpoint could not be written, found or read safely."""


class SchemaVersionError(TorchsmithError):
    """A record's ``schema_version`` has a major this reader does not understand."""


class InterfacesVersionError(TorchsmithError):
    """A suite was built against a different torchsmith-interfaces major."""


class RegistryError(TorchsmithError, KeyError):
    """A name is missing from, or already taken in, a registry."""

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0]) if self.args else ""


class MissingSuiteError(TorchsmithError, ImportError):
    """Something needs a torchsmith suite that is not installed."""
