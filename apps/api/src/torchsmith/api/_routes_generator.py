"""The generator: families, presets, backends; render a spec as a job; fetch the result."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool

from torchsmith.interfaces import GeneratedArtifact, JobStatus

from ._auth import SubmitKey, read_access
from ._http import JobId, jobs, json_text, settings
from ._routes_jobs import job_dir, zip_dir
from ._routes_train import require_runner_suite
from ._schemas import GenerateRequest
from ._suites import suite

router = APIRouter(prefix="/generator", tags=["generator"])


def _listing(function: str) -> Any:
    from fastapi.encoders import jsonable_encoder  # imports pydantic.v1: keep it off start-up

    return jsonable_encoder(getattr(suite("generator", function), function)())


@router.get("/families", dependencies=[Depends(read_access)], summary="Model families")
async def families() -> list[str]:
    return list(await run_in_threadpool(_listing, "list_families"))


@router.get(
    "/presets",
    dependencies=[Depends(read_access)],
    summary="Named specs: preset name -> its family",
)
async def presets() -> dict[str, str]:
    return dict(await run_in_threadpool(_listing, "list_presets"))


@router.get("/backends", dependencies=[Depends(read_access)], summary="Code backends")
async def backends() -> list[str]:
    return list(await run_in_threadpool(_listing, "list_backends"))


@router.post(
    "/render",
    status_code=202,
    response_model=JobStatus,
    summary="Generate a model from a preset or spec, as a job",
)
async def render(
    request: Request,
    body: Annotated[GenerateRequest, Body()],
    key: SubmitKey,
) -> Response:
    if (body.preset is None) == (body.spec is None):
        raise HTTPException(422, "give exactly one of 'preset' and 'spec'")
    await run_in_threadpool(require_runner_suite, request, "generate", "generator", "generate")
    if body.preset is not None and "generate" not in settings(request).runners:
        presets = await run_in_threadpool(_listing, "list_presets")
        if body.preset not in presets:  # a name with a spec suffix would be read as a file
            raise HTTPException(
                422, f"unknown preset {body.preset!r}; presets: {', '.join(sorted(presets))}"
            )
    params = body.model_dump(exclude={"timeout_s"})
    status = jobs(request).submit("generate", params, owner=key.key_id, timeout_s=body.timeout_s)
    return json_text(status.write(), status_code=202)


def finished_artifact(request: Request, job_id: str) -> GeneratedArtifact:
    """The GeneratedArtifact of a succeeded generate job, or 404/409 saying why not."""
    status = jobs(request).get(job_id)
    if status.kind != "generate":
        raise HTTPException(404, f"job {job_id} is a {status.kind} job, not a generate job")
    if status.state != "succeeded" or not status.result:
        raise HTTPException(
            409, f"generate job {job_id} is {status.state}; its artifact exists once it succeeded"
        )
    return GeneratedArtifact.read(status.result)


@router.get(
    "/{job_id}",
    response_model=GeneratedArtifact,
    dependencies=[Depends(read_access)],
    summary="What a generate job wrote",
)
async def artifact(request: Request, job_id: JobId) -> Response:
    return json_text(finished_artifact(request, job_id).write())


@router.get(
    "/{job_id}/download",
    dependencies=[Depends(read_access)],
    summary="A generate job's files as a zip",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}},
)
async def download(request: Request, job_id: JobId) -> Response:
    files = [f.path for f in finished_artifact(request, job_id).files]
    data = await run_in_threadpool(zip_dir, job_dir(request, job_id), files)
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="model-{job_id}.zip"'},
    )
