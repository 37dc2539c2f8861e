"""``create_app``: the FastAPI application, its lifespan and its error handling."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from torchsmith.interfaces import (
    ConfigError,
    DataError,
    MissingSuiteError,
    RegistryError,
    TorchsmithError,
)

from ._auth import RateLimiter, refund_if_spent
from ._hub import EventHub
from ._jobs import JobManager, JobNotFoundError, QueueFullError
from ._keys import KeyStore
from ._limits import BodySizeLimit
from ._origin import TrustedHosts
from ._routes_bench import save_bench_result
from ._schemas import ERROR_RESPONSES
from ._settings import Settings
from ._store import Store

log = logging.getLogger(__name__)
API_PREFIX = "/api/v1"

DESCRIPTION = """The torchsmith service: generate models, test them, benchmark and train them as
jobs, watch jobs live over a WebSocket, and read results in the dashboard at `/`.

Every route that starts work or changes state needs `Authorization: Bearer <key>`
(create a key with `torchsmith serve keys create NAME`). Read routes are public unless
the server runs with `--read-access key`.
"""


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    settings.jobs_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.store_path)
    hub = EventHub(settings.ws_queue_size)
    hub.bind(asyncio.get_running_loop())
    app.state.store = store
    app.state.hub = hub
    manager = JobManager(store, hub, settings)
    manager.finishers["bench"] = partial(save_bench_result, settings.data_dir, app.state)
    app.state.jobs = manager
    gc.freeze()  # what start-up built lives as long as the app: keep it out of GC passes
    try:
        yield
    finally:
        await asyncio.to_thread(manager.close)
        store.close()
        gc.unfreeze()  # let the interpreter's last collection clean everything up
        bench = getattr(app.state, "bench_store", None)
        app.state.bench_store = None
        if bench is not None:
            bench.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The torchsmith app over ``settings.data_dir``; state opens when the app starts."""
    from . import __version__
    from ._dashboard import router as dashboard_router
    from ._dashboard import static_routes
    from ._routes_bench import router as bench_router
    from ._routes_generator import router as generator_router
    from ._routes_jobs import router as jobs_router
    from ._routes_system import router as system_router
    from ._routes_tests import router as tests_router
    from ._routes_train import router as train_router
    from ._routes_ws import router as ws_router

    settings = settings or Settings()
    app = FastAPI(
        title="torchsmith",
        version=__version__,
        description=DESCRIPTION,
        lifespan=_lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.keys = KeyStore(settings.keys_path)
    app.state.limiter = RateLimiter(settings.submit_burst, settings.submit_per_minute)
    for router in (
        system_router,
        jobs_router,
        train_router,
        generator_router,
        tests_router,
        bench_router,
        ws_router,
    ):
        app.include_router(router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(dashboard_router)
    for route in static_routes():
        app.router.routes.append(route)
    _add_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.allowed_hosts:
        app.add_middleware(TrustedHosts, hosts=settings.allowed_hosts)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


def _unprocessable(request: Request, body: dict[str, object]) -> JSONResponse:
    """A 422, whose submission (if it was one) spends no token of the key's rate limit."""
    refund_if_spent(request)
    return JSONResponse(body, status_code=422)


def _error(status: int, exc: Exception, detail: str | None = None) -> JSONResponse:
    body = {"detail": str(exc) if detail is None else detail, "error": type(exc).__name__}
    if status == 422:  # every 422 names the field in `message`, as a schema mismatch does
        body["message"] = str(exc)
    return JSONResponse(body, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}"
            for err in exc.errors()
        ]
        detail = [
            {k: v for k, v in err.items() if k in ("loc", "msg", "type")} for err in exc.errors()
        ]
        return _unprocessable(
            request, {"detail": detail, "message": "invalid request: " + "; ".join(problems)}
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 422:  # a route's own check ("give exactly one of ...")
            return _unprocessable(request, {"detail": exc.detail, "message": exc.detail})
        return await http_exception_handler(request, exc)

    @app.exception_handler(QueueFullError)
    async def _queue_full(request: Request, exc: QueueFullError) -> JSONResponse:
        refund_if_spent(request)  # no job was made
        response = _error(429, exc)
        response.headers["Retry-After"] = "10"
        return response

    @app.exception_handler(JobNotFoundError)
    async def _not_found(request: Request, exc: JobNotFoundError) -> JSONResponse:
        return _error(404, exc)

    @app.exception_handler(MissingSuiteError)
    async def _missing(request: Request, exc: MissingSuiteError) -> JSONResponse:
        return _error(501, exc)

    @app.exception_handler(TorchsmithError)
    async def _torchsmith(request: Request, exc: TorchsmithError) -> JSONResponse:
        if isinstance(exc, ConfigError | DataError | RegistryError):
            refund_if_spent(request)  # a config the suite refuses: no job, no token spent
            return _error(422, exc)
        if isinstance(exc, LookupError):  # a bench run no reference names; its message has
            reference = getattr(exc, "reference", "?")  # the server's path: not shown here
            return _error(404, exc, f"no bench run matches {reference!r}")
        return _error(400, exc)
