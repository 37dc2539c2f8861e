"""Request bodies. Responses are the interfaces records (JobStatus, TrainingEvent, ...)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

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
    """Run the ModelTest suite on the model a generate job produced."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"generate_job": "3f2a9c0d11e4b7a8"}]},
    )

    generate_job: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")] = Field(
        description="Id of a succeeded generate job."
    )
    timeout_s: Timeout = None


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
