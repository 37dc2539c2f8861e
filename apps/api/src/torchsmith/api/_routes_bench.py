"""Benchmarks: run cases as a job, and read the server's bench store (runs, results,
history with confidence intervals, comparisons, the HTML report).

The store is ``<data-dir>/bench.duckdb``, opened by the server alone: a bench job
measures in its own process and hands its BenchmarkResults back, and the server
saves them as one run (DuckDB allows one writing process per file).
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from torchsmith.interfaces import BenchmarkResult, JobStatus

from ._auth import SubmitKey, read_access
from ._http import jobs, json_text, settings
from ._routes_train import require_runner_suite
from ._schemas import BenchRequest
from ._suites import suite

router = APIRouter(prefix="/bench", tags=["bench"])
RunRef = Annotated[
    str,
    Query(
        pattern=r"^[A-Za-z0-9~._-]{1,64}$",
        description="A run id, 'latest', 'latest~N', a run uid or git commit prefix.",
    ),
]
BaseRef = Annotated[
    str | None,
    Query(pattern=r"^[A-Za-z0-9~._-]{1,64}$", description="Compare against this run."),
]
_store_lock = threading.Lock()


class Run(BaseModel):
    run_id: int
    uid: str
    created_at: datetime
    label: str | None
    fingerprint: str
    git_commit: str | None
    n_results: int


class HistoryPoint(BaseModel):
    """One run's median of one case variant, with its bootstrap confidence interval."""

    key: str
    params_label: str
    run_id: int
    time: float
    git_commit: str | None
    median: float
    ci_low: float | None
    ci_high: float | None
    unit: str = "s"


class ComparisonRow(BaseModel):
    key: str
    case: str
    params_label: str
    unit: str
    base_median: float | None
    head_median: float | None
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    verdict: str


class Comparison(BaseModel):
    base: int | None
    head: int | None
    counts: dict[str, int]
    rows: list[ComparisonRow]
    notes: list[str] = Field(
        default_factory=list,
        description="Warnings on how the two runs were measured (e.g. different rounds).",
    )


def bench_store(app_state: Any, path: Any) -> Any:
    """The server's BenchStore, opened once on first use."""
    with _store_lock:
        store = getattr(app_state, "bench_store", None)
        if store is None:
            store = suite("bench", "BenchStore").BenchStore(path)
            app_state.bench_store = store
        return store


def _store(request: Request) -> Any:
    return bench_store(request.app.state, settings(request).data_dir / "bench.duckdb")


def _label(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "default"


@router.post("/run", status_code=202, response_model=JobStatus, summary="Run benchmark cases")
async def run(
    request: Request,
    body: Annotated[BenchRequest, Body()],
    key: SubmitKey,
) -> Response:
    await run_in_threadpool(require_runner_suite, request, "bench", "bench", "measure_cases")
    params = {"cases": list(body.cases), "label": body.label}
    status = jobs(request).submit("bench", params, owner=key.key_id, timeout_s=body.timeout_s)
    return json_text(status.write(), status_code=202)


@router.get(
    "/runs",
    response_model=list[Run],
    dependencies=[Depends(read_access)],
    summary="Stored runs, newest first",
)
async def runs(request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[Run]:
    infos = await run_in_threadpool(lambda: _store(request).runs(limit=limit))
    return [
        Run(run_id=i.run_id, uid=i.uid, created_at=i.created_at, label=i.label,
            fingerprint=i.fingerprint, git_commit=i.environment.git_commit,
            n_results=i.n_results)
        for i in infos
    ]  # fmt: skip


@router.get(
    "/runs/{run_id}/results",
    response_model=list[BenchmarkResult],
    dependencies=[Depends(read_access)],
    summary="A run's results with raw samples",
)
async def results(request: Request, run_id: int) -> Response:
    found = await run_in_threadpool(lambda: _store(request).results(run_id))
    return json_text("[" + ",".join(r.write() for r in found) + "]")


@router.get(
    "/cases",
    response_model=list[str],
    dependencies=[Depends(read_access)],
    summary="Names of every stored case",
)
async def cases(request: Request) -> list[str]:
    rows = await run_in_threadpool(lambda: _store(request).cases())
    return sorted({name for _, name, _ in rows})


def _history(
    request: Request, case: str, fingerprint: str | None, any_environment: bool
) -> list[HistoryPoint]:
    store = _store(request)
    if fingerprint is None and not any_environment:
        newest = store.runs(limit=1)  # by default, the environment of the newest run
        if not newest:
            return []
        fingerprint = newest[0].fingerprint
    points = []
    for key, name, params in store.cases():
        if name != case:
            continue
        for p in store.history(key, fingerprint=fingerprint, any_environment=any_environment):
            points.append(HistoryPoint(
                key=key, params_label=_label(params), run_id=p.run_id,
                time=p.created_at.timestamp(), git_commit=p.git_commit, median=p.median,
                ci_low=p.ci_low, ci_high=p.ci_high,
            ))  # fmt: skip
    return points


@router.get(
    "/history",
    response_model=list[HistoryPoint],
    dependencies=[Depends(read_access)],
    summary="A case's median per run, with confidence intervals",
    description="Runs of one environment only: ``fingerprint``, by default the newest run's. "
    "``any_environment=true`` mixes machines.",
)
async def history(
    request: Request,
    case: Annotated[str, Query(pattern=r"^[A-Za-z0-9_.:/\-]{1,200}$")],
    fingerprint: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.:\-]{1,200}$")] = None,
    any_environment: bool = False,
) -> list[HistoryPoint]:
    return await run_in_threadpool(_history, request, case, fingerprint, any_environment)


def _compare(request: Request, base: str, head: str) -> Comparison:
    bench = suite("bench", "compare")
    result = bench.compare(_store(request), base, head)
    rows = [
        ComparisonRow(
            key=r.key, case=r.case, params_label=_label(r.params), unit=r.unit,
            base_median=r.base_median, head_median=r.head_median, ratio=r.ratio,
            ci_low=r.ci_low, ci_high=r.ci_high, p_value=r.p_value, verdict=r.verdict,
        )
        for r in result.rows
    ]  # fmt: skip
    return Comparison(
        base=result.base.run_id if result.base else None,
        head=result.head.run_id if result.head else None,
        counts=dict(result.counts),
        rows=rows,
        notes=list(getattr(result, "notes", [])),  # a bench older than the notes has none
    )


@router.get(
    "/compare",
    response_model=Comparison,
    dependencies=[Depends(read_access)],
    summary="Compare two runs case by case",
)
async def compare(
    request: Request, base: RunRef = "latest~1", head: RunRef = "latest"
) -> Comparison:
    return await run_in_threadpool(_compare, request, base, head)


@router.get(
    "/compare/latest",
    response_model=Comparison,
    dependencies=[Depends(read_access)],
    summary="The latest run against the one before (empty with fewer than two runs)",
)
async def compare_latest(request: Request) -> Comparison:
    if len(await run_in_threadpool(lambda: _store(request).runs(limit=2))) < 2:
        return Comparison(base=None, head=None, counts={}, rows=[])
    return await run_in_threadpool(_compare, request, "latest~1", "latest")


def _report(request: Request, base: str | None, head: str) -> str:
    bench = suite("bench", "html_report", "compare")
    store = _store(request)
    comparison = bench.compare(store, base, head) if base else None
    html: str = bench.html_report(store, head, comparison=comparison)
    return html


@router.get(
    "/report.html",
    response_class=HTMLResponse,
    dependencies=[Depends(read_access)],
    summary="The bench suite's HTML report of run head, compared with run base if given",
)
async def report(request: Request, head: RunRef = "latest", base: BaseRef = None) -> HTMLResponse:
    return HTMLResponse(await run_in_threadpool(_report, request, base, head))


def save_bench_result(data_dir: Any, app_state: Any, result: dict[str, Any]) -> dict[str, Any]:
    """Job finisher: store a bench job's results as one run; the job keeps a summary."""
    store = bench_store(app_state, data_dir / "bench.duckdb")
    measured = [BenchmarkResult.read(r) for r in result.get("results", [])]
    env_data = result.get("environment")
    environment = measured[0].environment if measured else None
    if env_data is not None:
        from torchsmith.interfaces import Environment

        environment = Environment.read(env_data)
    run_id = store.save_run(measured, environment=environment, label=result.get("label"))
    return {"run_id": run_id, "cases": sorted({r.case for r in measured}),
            "results": len(measured)}  # fmt: skip
