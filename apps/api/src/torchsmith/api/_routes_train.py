"""Training jobs: recipes, submit, status, metrics so far, stop."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool

from torchsmith.interfaces import JobStatus, RegistryError, TrainingEvent

from ._auth import KeyRequired, SubmitKey, read_access
from ._http import JobId, jobs, json_text, json_texts, settings, store
from ._jobs import JobNotFoundError
from ._schemas import TrainRequest
from ._suites import suite
from ._tasks import checked_train_config

router = APIRouter(prefix="/train", tags=["train"])


def require_runner_suite(request: Request, kind: str, name: str, *needs: str) -> None:
    """501 now, rather than a failed job later, when the default runner's suite is missing."""
    if kind not in settings(request).runners:
        suite(name, *needs)


def _recipes() -> list[str]:
    from fastapi.encoders import jsonable_encoder  # imports pydantic.v1: keep it off start-up

    return [str(r) for r in jsonable_encoder(suite("trainer", "list_recipes").list_recipes())]


@router.get("/recipes", dependencies=[Depends(read_access)], summary="Recipes to train from")
async def recipes() -> list[str]:
    return await run_in_threadpool(_recipes)


def _check_request(recipe: str, overrides: list[str]) -> None:
    """A 4xx now, not a failed job later: an unknown recipe, a bad override, or overrides
    that would run code or read files on the server (see ``checked_train_config``)."""
    trainer = suite("trainer", "train")
    if hasattr(trainer, "load_config"):
        checked_train_config(recipe, overrides)  # the recipe's name, then the overrides
    elif hasattr(trainer, "list_recipes"):
        names = _recipes()
        if recipe not in names:
            raise RegistryError(f"unknown recipe {recipe!r}; recipes: {', '.join(names)}")


@router.post("", status_code=202, response_model=JobStatus, summary="Start a training job")
async def submit(
    request: Request,
    body: Annotated[TrainRequest, Body()],
    key: SubmitKey,
) -> Response:
    if "train" not in settings(request).runners:
        await run_in_threadpool(_check_request, body.recipe, list(body.overrides))
    status = jobs(request).submit(
        "train",
        {"recipe": body.recipe, "overrides": list(body.overrides)},
        owner=key.key_id,
        timeout_s=body.timeout_s,
    )
    return json_text(status.write(), status_code=202)


def _train_job(request: Request, job_id: str) -> JobStatus:
    status = jobs(request).get(job_id)
    if status.kind != "train":
        raise JobNotFoundError(f"job {job_id} is a {status.kind} job, not a training job")
    return status


@router.get(
    "/{job_id}",
    response_model=JobStatus,
    dependencies=[Depends(read_access)],
    summary="A training job's status",
)
async def status(request: Request, job_id: JobId) -> Response:
    return json_text(_train_job(request, job_id).write())


@router.get(
    "/{job_id}/metrics",
    response_model=list[TrainingEvent],
    dependencies=[Depends(read_access)],
    summary="The TrainingEvents so far",
)
async def metrics(request: Request, job_id: JobId) -> Response:
    _train_job(request, job_id)
    rows = await run_in_threadpool(store(request).events, job_id, types=("event",))
    return json_texts([record for _, _, record in rows])


@router.post("/{job_id}/stop", response_model=JobStatus, summary="Stop a training job")
async def stop(request: Request, job_id: JobId, key: KeyRequired) -> Response:
    _train_job(request, job_id)
    status = jobs(request).cancel(job_id, reason=f"stopped by key {key.key_id} ({key.name})")
    return json_text(status.write())
