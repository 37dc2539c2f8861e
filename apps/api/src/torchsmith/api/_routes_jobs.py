"""Jobs of every kind: list, get, events so far, cancel, and the files a job wrote."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel

from torchsmith.interfaces import JobStatus

from ._auth import KeyRequired, read_access
from ._http import JobId, jobs, json_text, json_texts, settings, store

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobKindQuery = Literal["generate", "test", "bench", "train"]
JobStateQuery = Literal["queued", "running", "succeeded", "failed", "cancelled", "timed_out"]


class JobMessage(BaseModel):
    """One stored job message: a TrainingEvent ('event') or a JobStatus ('status')."""

    seq: int
    type: Literal["event", "status"]
    record: dict[str, Any]


class JobFile(BaseModel):
    path: str
    bytes: int


@router.get(
    "",
    response_model=list[JobStatus],
    dependencies=[Depends(read_access)],
    summary="Jobs, newest first",
)
async def list_jobs(
    request: Request,
    kind: JobKindQuery | None = None,
    state: JobStateQuery | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    return json_texts(jobs(request).list_json(kind=kind, state=state, limit=limit))


@router.get(
    "/{job_id}",
    response_model=JobStatus,
    dependencies=[Depends(read_access)],
    summary="One job's status",
)
async def get_job(request: Request, job_id: JobId) -> Response:
    return json_text(jobs(request).status_json(job_id))


@router.get(
    "/{job_id}/events",
    response_model=list[JobMessage],
    dependencies=[Depends(read_access)],
    summary="A job's stored messages, in order",
)
async def job_events(
    request: Request,
    job_id: JobId,
    after: Annotated[int, Query(ge=-1, le=2**31 - 1, description="Only seq > after.")] = -1,
    type: Literal["event", "status"] | None = None,
) -> Response:
    jobs(request).get(job_id)
    types = (type,) if type else ("event", "status")
    rows = await run_in_threadpool(store(request).events, job_id, types=types, after=after)
    return json_texts([f'{{"seq":{s},"type":"{t}","record":{r}}}' for s, t, r in rows])


@router.post("/{job_id}/cancel", response_model=JobStatus, summary="Cancel a queued or running job")
async def cancel_job(request: Request, job_id: JobId, key: KeyRequired) -> Response:
    status = jobs(request).cancel(job_id, reason=f"cancelled by key {key.key_id} ({key.name})")
    return json_text(status.write())


def job_dir(request: Request, job_id: str) -> Path:
    jobs(request).get(job_id)  # 404 for an unknown id
    directory = (settings(request).jobs_dir / job_id).resolve()
    if not directory.is_dir():
        raise HTTPException(404, f"job {job_id} has no files")
    return directory


def safe_file(root: Path, relative: str) -> Path:
    """``root/relative`` resolved, or 404 if it escapes ``root`` or is not a file."""
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file():
        raise HTTPException(404, f"no file {relative!r} in this job's directory")
    return candidate


def _listing(root: Path) -> list[JobFile]:
    """The files under ``root``, but for hidden ones (a name starting with a dot, or under
    such a folder: a run's locks, a checkpoint still being written). A training job prunes
    checkpoints as it goes: what vanishes while listed is left out, not an error."""
    found = []
    for folder, subfolders, names in os.walk(root):  # os.walk skips a folder gone mid-walk
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(n for n in names if not n.startswith(".")):
            path = Path(folder, name)
            try:
                if path.is_symlink() or not path.resolve().is_relative_to(root):
                    continue
                found.append(JobFile(path=path.relative_to(root).as_posix(),
                                     bytes=path.stat().st_size))  # fmt: skip
            except FileNotFoundError:
                continue
    return sorted(found, key=lambda item: item.path)


def zip_dir(root: Path, only: list[str] | None = None) -> bytes:
    """The files under ``root`` (or just ``only``, relative paths checked to stay inside);
    of all of them, a file removed since it was listed (a pruned checkpoint) is left out."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for relative in only if only is not None else [f.path for f in _listing(root)]:
            try:
                archive.write(safe_file(root, relative), arcname=relative)
            except (HTTPException, FileNotFoundError):
                if only is not None:
                    raise
    return buffer.getvalue()


@router.get(
    "/{job_id}/files",
    response_model=list[JobFile],
    dependencies=[Depends(read_access)],
    summary="Files a job wrote",
)
async def list_files(request: Request, job_id: JobId) -> list[JobFile]:
    return await run_in_threadpool(_listing, job_dir(request, job_id))


@router.get(
    "/{job_id}/files/{path:path}",
    dependencies=[Depends(read_access)],
    summary="Download one file a job wrote",
    response_class=FileResponse,
)
async def get_file(request: Request, job_id: JobId, path: str) -> FileResponse:
    root = job_dir(request, job_id)
    return FileResponse(safe_file(root, path), filename=Path(path).name)


@router.get(
    "/{job_id}/archive.zip",
    dependencies=[Depends(read_access)],
    summary="Every file a job wrote, as a zip",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}},
)
async def archive(request: Request, job_id: JobId) -> Response:
    data = await run_in_threadpool(zip_dir, job_dir(request, job_id))
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{job_id}.zip"'},
    )
