"""Small shared pieces of the routers: fast JSON responses, path parameters, app state."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Request, Response

from ._jobs import JobManager
from ._settings import Settings
from ._store import Store

JOB_ID_PATTERN = r"^[0-9a-f]{16}$"
JobId = Annotated[
    str,
    Path(
        pattern=JOB_ID_PATTERN,
        description="A job id (16 hex digits).",
        examples=["3f2a9c0d11e4b7a8"],
    ),
]


def json_text(text: str, status_code: int = 200) -> Response:
    """A response whose body is already-serialised JSON (skips re-validation on hot paths)."""
    return Response(content=text, status_code=status_code, media_type="application/json")


def json_texts(texts: list[str]) -> Response:
    return json_text("[" + ",".join(texts) + "]")


def jobs(request: Request) -> JobManager:
    manager: JobManager = request.app.state.jobs
    return manager


def store(request: Request) -> Store:
    value: Store = request.app.state.store
    return value


def settings(request: Request) -> Settings:
    value: Settings = request.app.state.settings
    return value


def openapi_example(value: Any) -> dict[str, Any]:
    """An ``openapi_examples`` entry with one example named 'default'."""
    return {"default": {"summary": "example", "value": value}}
