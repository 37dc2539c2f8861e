"""The ModelTest suite on a generated model, as a job; its report."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool

from torchsmith.interfaces import JobStatus

from ._auth import SubmitKey, read_access
from ._http import JobId, jobs, json_text
from ._routes_generator import finished_artifact
from ._routes_train import require_runner_suite
from ._schemas import ModelTestRequest

router = APIRouter(prefix="/tests", tags=["tests"])


@router.post(
    "",
    status_code=202,
    response_model=JobStatus,
    summary="Run the ModelTest suite on a generated model, as a job",
)
async def run_tests(
    request: Request,
    body: Annotated[ModelTestRequest, Body()],
    key: SubmitKey,
) -> Response:
    artifact = finished_artifact(request, body.generate_job)
    await run_in_threadpool(  # the first import of the suite loads torch: not on the loop
        require_runner_suite, request, "test", "testing", "ModelTest", "read_report"
    )
    params = {"generate_job": body.generate_job, "artifact": artifact.model_dump(mode="json")}
    status = jobs(request).submit("test", params, owner=key.key_id, timeout_s=body.timeout_s)
    return json_text(status.write(), status_code=202)


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
