"""The ModelTest suite on a generated or a registered model, as a job; its report.

Registered models are named by their entry-point name only (see _registered); the
server looks names up in package metadata and never imports the model's code.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool

from torchsmith.interfaces import JobStatus

from ._auth import SubmitKey, read_access
from ._http import JobId, jobs, json_text
from ._registered import UnknownModelError, find_model, registered_models
from ._routes_generator import finished_artifact
from ._routes_train import require_runner_suite
from ._schemas import ModelTestRequest, RegisteredModelInfo

router = APIRouter(prefix="/tests", tags=["tests"])


@router.get(
    "/models",
    response_model=list[RegisteredModelInfo],
    dependencies=[Depends(read_access)],
    summary="Models that installed packages register for testing (torchsmith.models)",
)
async def models() -> list[RegisteredModelInfo]:
    found = await run_in_threadpool(registered_models)  # reads every package's metadata
    return [RegisteredModelInfo(**vars(model)) for model in found.values()]


@router.post(
    "",
    status_code=202,
    response_model=JobStatus,
    summary="Run the ModelTest suite on a generated or a registered model, as a job",
    responses={404: {"description": "Unknown generate job or registered model"}},
)
async def run_tests(
    request: Request,
    body: Annotated[ModelTestRequest, Body()],
    key: SubmitKey,
) -> Response:
    if (body.generate_job is None) == (body.model is None):
        raise HTTPException(422, "give exactly one of 'generate_job' and 'model'")
    params: dict[str, Any]
    if body.model is not None:
        params = await run_in_threadpool(_registered_params, body.model)
    else:
        artifact = finished_artifact(request, body.generate_job or "")
        params = {"generate_job": body.generate_job, "artifact": artifact.model_dump(mode="json")}
    await run_in_threadpool(  # the first import of the suite loads torch: not on the loop
        require_runner_suite, request, "test", "testing", "ModelTest", "read_report"
    )
    status = jobs(request).submit("test", params, owner=key.key_id, timeout_s=body.timeout_s)
    return json_text(status.write(), status_code=202)


def _registered_params(name: str) -> dict[str, Any]:
    """The job's parameters for a registered model; 404 listing the registered names."""
    try:
        model = find_model(name)
    except UnknownModelError as exc:
        raise HTTPException(404, str(exc)) from None
    return {"model": model.name, "target": model.target, "distribution": model.distribution}


@router.get(
    "/{job_id}/report",
    dependencies=[Depends(read_access)],
    summary="The report of a finished test job",
)
async def report(request: Request, job_id: JobId) -> dict[str, Any]:
    status = jobs(request).get(job_id)
    if status.kind != "test":
        raise HTTPException(404, f"job {job_id} is a {status.kind} job, not a test job")
    if not status.done:
        raise HTTPException(409, f"test job {job_id} is still {status.state}")
    return {"job": status.model_dump(mode="json"), "report": status.result}
