"""torchsmith.interfaces: the versioned contracts shared by every torchsmith suite.

Protocols, record schemas, the error tree and the interfaces version. Importing
this package does not import torch, and pydantic is imported only when a
record is first used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._errors import (
    CheckpointError,
    ConfigError,
    DataError,
    InterfacesVersionError,
    MissingSuiteError,
    RegistryError,
    SchemaVersionError,
    TorchsmithError,
)
from ._files import atomic_target, atomic_write, fsync_directory
from ._protocols import (
    BenchmarkCase,
    Checkpointer,
    DataSource,
    Evaluator,
    EventSink,
    Loss,
    Model,
    ModelGenerator,
    Task,
    TaskOutput,
    Trainer,
)
from ._version import INTERFACES_VERSION, parse_version, require_interfaces

if TYPE_CHECKING:
    from ._cli import KNOWN_COMMANDS, installed_commands
    from ._records import (
        BenchmarkResult,
        CudaDevice,
        Environment,
        GeneratedArtifact,
        GeneratedFile,
        HardwareInfo,
        JobStatus,
        LossOutput,
        Record,
        Statistics,
        TrainingEvent,
    )

_RECORDS = {
    "BenchmarkResult",
    "CudaDevice",
    "Environment",
    "GeneratedArtifact",
    "GeneratedFile",
    "HardwareInfo",
    "JobStatus",
    "LossOutput",
    "Record",
    "Statistics",
    "TrainingEvent",
}
_COMMANDS = {"KNOWN_COMMANDS", "installed_commands"}


def __getattr__(name: str) -> Any:
    # Records need pydantic and the command table needs importlib.metadata: load them on
    # first use to keep this import fast.
    if name in _RECORDS:
        return getattr(import_module("._records", __name__), name)
    if name in _COMMANDS:
        return getattr(import_module("._cli", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    # version
    "INTERFACES_VERSION",
    "parse_version",
    "require_interfaces",
    # the torchsmith command
    "KNOWN_COMMANDS",
    "installed_commands",
    # files
    "atomic_write",
    "atomic_target",
    "fsync_directory",
    # errors
    "TorchsmithError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "SchemaVersionError",
    "InterfacesVersionError",
    "RegistryError",
    "MissingSuiteError",
    # protocols
    "DataSource",
    "Model",
    "Loss",
    "Task",
    "TaskOutput",
    "Trainer",
    "Evaluator",
    "Checkpointer",
    "EventSink",
    "BenchmarkCase",
    "ModelGenerator",
    # records
    "Record",
    "TrainingEvent",
    "LossOutput",
    "CudaDevice",
    "HardwareInfo",
    "Statistics",
    "Environment",
    "BenchmarkResult",
    "GeneratedFile",
    "GeneratedArtifact",
    "JobStatus",
]
