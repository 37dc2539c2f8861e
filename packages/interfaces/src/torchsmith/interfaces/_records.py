"""Record schemas: everything that crosses a package or process boundary.

Each record carries ``schema_version`` ("MAJOR.MINOR"). Readers accept any
minor of their own major (unknown fields from a newer minor are ignored, fields
added since an older minor take their defaults) and refuse another major with
a :class:`SchemaVersionError` naming both versions. A record that gains an optional
field bumps its own ``SCHEMA_VERSION`` minor (``BenchmarkResult`` is at 1.1); the others
stay at 1.0.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from ._errors import SchemaVersionError

Scalar = str | int | float | bool | None


class Record(BaseModel):
    """Base of every record: a versioned, JSON-serialisable pydantic model."""

    model_config = ConfigDict(extra="ignore", frozen=False)

    SCHEMA_VERSION: ClassVar[str] = "1.0"
    schema_version: str = Field(default="1.0", description="MAJOR.MINOR of the writer's schema.")

    @model_validator(mode="before")
    @classmethod
    def _check_schema_version(cls, data: Any) -> Any:
        if isinstance(data, dict):
            written = data.get("schema_version")
            if written is None:
                data = {**data, "schema_version": cls.SCHEMA_VERSION}
            else:
                _check_major(cls.__name__, str(written), cls.SCHEMA_VERSION)
        return data

    @classmethod
    def read(cls, data: str | bytes | dict[str, Any]) -> Self:
        """Parse a record from JSON text or a dict, checking its schema version."""
        if isinstance(data, dict):
            return cls.model_validate(data)
        return cls.model_validate_json(data)

    def write(self) -> str:
        """This record as JSON text."""
        return self.model_dump_json()


def _check_major(record: str, written: str, supported: str) -> None:
    try:
        written_major = int(written.split(".")[0])
    except ValueError:
        raise SchemaVersionError(
            f"{record}.schema_version {written!r} is not of the form MAJOR.MINOR"
        ) from None
    supported_major = int(supported.split(".")[0])
    if written_major != supported_major:
        newer = "newer" if written_major > supported_major else "older"
        raise SchemaVersionError(
            f"{record} was written with schema {written}, a {newer} major than this reader's "
            f"{supported}; upgrade torchsmith-interfaces (or the writer) so both use "
            f"{max(written_major, supported_major)}.x"
        )


# ---------------------------------------------------------------- training

EventKind = Literal["step", "eval", "checkpoint", "epoch_end", "end", "error"]

# A metric's JSON form: a number, or one of the strings a NaN or an infinity is written as
# (the schema says so since 1.6; before, it promised a number, which "NaN" is not).
Metric = Annotated[
    float,
    WithJsonSchema({"anyOf": [{"type": "number"}, {"enum": ["NaN", "Infinity", "-Infinity"]}]}),
]


class TrainingEvent(Record):
    """One thing that happened during training, as sent to an EventSink.

    A metric may be NaN or infinite (a diverged loss): JSON has no such numbers, so they are
    written as the strings "NaN", "Infinity" and "-Infinity", which every 1.x reader parses
    back into floats (since 1.4; before, NaN was written as null, which no reader accepted).
    """

    model_config = ConfigDict(ser_json_inf_nan="strings")

    kind: EventKind
    step: int = Field(ge=0, description="Optimizer steps completed when the event fired.")
    epoch: int = Field(default=0, ge=0)
    time: float = Field(default_factory=time.time, description="Unix time, seconds.")
    metrics: dict[str, Metric] = Field(default_factory=dict)
    run_id: str | None = None
    message: str | None = Field(default=None, description="Error text, or a checkpoint path.")


class LossOutput(Record):
    """A loss value and its named components, detached, for logging."""

    loss: float
    components: dict[str, float] = Field(default_factory=dict)


# ---------------------------------------------------------------- hardware


class CudaDevice(Record):
    index: int
    name: str
    total_memory_bytes: int
    compute_capability: tuple[int, int]


class HardwareInfo(Record):
    """What a machine offers torchsmith: CPU, memory, torch build and accelerators."""

    cpu_model: str
    cpu_cores_physical: int | None = None
    cpu_cores_logical: int
    memory_bytes: int | None = None
    platform: str
    python_version: str
    torch_version: str | None = None
    torch_cuda_version: str | None = None
    torch_debug_build: bool | None = None
    cuda_devices: list[CudaDevice] = Field(default_factory=list)
    mps_available: bool = False
    capabilities: dict[str, bool] = Field(
        default_factory=dict, description="bf16, tf32, flash_sdpa, mem_efficient_sdpa, compile"
    )
    reasons: dict[str, str] = Field(
        default_factory=dict, description="Why a capability is unavailable, by name."
    )


# ---------------------------------------------------------------- benchmarks


class Statistics(Record):
    """Summary of a benchmark's raw samples (seconds unless ``unit`` says otherwise)."""

    n: int = Field(ge=0)
    median: float
    mean: float
    stdev: float
    iqr: float
    min: float
    max: float
    ci_low: float | None = Field(default=None, description="Bootstrap CI of the median, low end.")
    ci_high: float | None = None


class Environment(Record):
    """Where a benchmark ran; ``fingerprint`` decides which runs are comparable."""

    fingerprint: str
    git_commit: str | None = None
    git_branch: str | None = None
    hostname: str | None = None
    cpu: str | None = None
    gpu: str | None = None
    python_version: str | None = None
    torch_version: str | None = None
    cuda_version: str | None = None
    num_threads: int | None = None


class BenchmarkResult(Record):
    """One case with one set of parameters: every raw sample and its statistics.

    Schema 1.1 added ``left_out_samples``; a 1.0 record reads with it empty.
    """

    SCHEMA_VERSION: ClassVar[str] = "1.1"
    schema_version: str = Field(default="1.1", description="MAJOR.MINOR of the writer's schema.")

    case: str
    params: dict[str, Scalar] = Field(default_factory=dict)
    samples: list[float]
    left_out_samples: list[float] = Field(
        default_factory=list,
        description="Samples measured but excluded from `statistics` (a disturbed round), "
        "kept so the raw data stays complete.",
    )
    unit: str = "s"
    inner_loops: int = Field(default=1, ge=1, description="Calls timed together per sample.")
    statistics: Statistics
    environment: Environment
    peak_memory_bytes: int | None = None
    baseline: str | None = Field(default=None, description="Name of the side-by-side reference.")
    extra: dict[str, float] = Field(default_factory=dict, description="e.g. throughput")


# ---------------------------------------------------------------- generator


class GeneratedFile(Record):
    path: str = Field(description="Relative to the artifact's directory.")
    sha256: str
    bytes: int = Field(ge=0)


class GeneratedArtifact(Record):
    """What the generator wrote for one spec, and whether it was validated."""

    name: str
    family: str
    backend: Literal["cpu", "cuda", "mps"] = "cpu"
    directory: str
    files: list[GeneratedFile] = Field(default_factory=list)
    spec: dict[str, Any] = Field(default_factory=dict)
    validated: bool = False
    validation: dict[str, str] = Field(
        default_factory=dict, description="Check name -> 'passed', 'skipped: why' or the error."
    )


# ---------------------------------------------------------------- jobs

JobKind = Literal["generate", "test", "bench", "train"]
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled", "timed_out"]


class JobStatus(Record):
    """The state of one unit of long work run outside a request."""

    id: str
    kind: JobKind
    state: JobState = "queued"
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    progress: float | None = Field(default=None, ge=0.0, le=1.0)
    error: str | None = None
    result: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled", "timed_out")
