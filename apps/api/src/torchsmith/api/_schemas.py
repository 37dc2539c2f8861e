"""Request bodies, and the error body. Responses are the interfaces records (JobStatus,
TrainingEvent, ...)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ._registered import NAME_PATTERN as MODEL_NAME_PATTERN

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{1,100}$")]
CasePattern = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:/*\-]{1,200}$")]
Override = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{1,100}=[^\x00-\x1f]{0,500}$"),
]
Timeout = Annotated[
    float | None,
    Field(default=None, gt=0, le=7 * 24 * 3600, description="Seconds; the server caps it."),
]


class TrainRequest(BaseModel):
    """Start training from a recipe, with ``key=value`` overrides."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"recipe": "digits-classifier", "overrides": ["training.max_steps=100"]}]
        },
    )

    recipe: Name = Field(description="A recipe name from GET /api/v1/train/recipes.")
    overrides: list[Override] = Field(default_factory=list, max_length=100)
    timeout_s: Timeout = None


class GenerateRequest(BaseModel):
    """Render a model from a preset or a full spec, then zip what was written."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "preset": "gpt2",
                    "overrides": ["n_layer=1", "n_embd=32", "n_head=2", "vocab_size=128"],
                    "backend": "cpu",
                }
            ]
        },
    )

    preset: Name | None = Field(default=None, description="A preset name (or give spec).")
    spec: dict[str, Any] | None = Field(default=None, description="A full generator spec.")
    overrides: list[Override] = Field(default_factory=list, max_length=100)
    backend: Literal["cpu", "cuda", "mps"] = "cpu"
    check: bool = Field(default=True, description="Validate the generated model.")
    timeout_s: Timeout = None


class ModelTestRequest(BaseModel):
    """Run the ModelTest suite on a generated model, or on a registered one by its name."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"generate_job": "3f2a9c0d11e4b7a8"}, {"model": "my-mlp"}]},
    )

    generate_job: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")] | None = Field(
        default=None, description="Id of a succeeded generate job (or give model)."
    )
    model: Annotated[str, StringConstraints(pattern=MODEL_NAME_PATTERN)] | None = Field(
        default=None,
        description="A registered model's name from GET /api/v1/tests/models (or give "
        "generate_job); never a module or file path.",
    )
    timeout_s: Timeout = None


class RegisteredModelInfo(BaseModel):
    """A model registered by an installed package (entry point group torchsmith.models)."""

    name: str = Field(description="What a request names: POST /api/v1/tests {'model': name}.")
    target: str = Field(description="The entry point's 'module:attribute'.")
    distribution: str | None = Field(description="The installed package that registers it.")
    version: str | None = Field(description="That package's version.")


class BenchRequest(BaseModel):
    """Run benchmark cases in a job; results land in the server's bench store."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"cases": ["matmul*"], "label": "nightly"}]},
    )

    cases: list[CasePattern] = Field(
        default_factory=list,
        max_length=100,
        description="Case names or glob patterns; empty runs every registered case.",
    )
    label: Name | None = Field(default=None, description="A name for the run.")
    timeout_s: Timeout = None


class ErrorBody(BaseModel):
    """Every error response. ``detail`` says what went wrong (a list of ``{loc, msg, type}``
    for a request that does not fit its schema); a 422's ``message`` names each field in one
    line; ``error`` is the kind of a torchsmith error (``ConfigError``, ...)."""

    detail: str | list[dict[str, Any]]
    message: str | None = None
    error: str | None = None


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


# What any route may answer besides its own success (declared on every router, so the
# OpenAPI document lists the codes clients meet).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _error("No API key, or one that is not valid (every write; reads with --read-access key)"),
    404: _error("No such job, file, run or registered model"),
    409: _error("The job is not in a state that has this (still running, another kind)"),
    413: _error("The request body is larger than the server takes"),
    422: _error("Invalid input: `message` names each field"),
    429: _error("Too many job submissions for this key: see Retry-After"),
    501: _error("The suite this needs is not installed on the server"),
}
