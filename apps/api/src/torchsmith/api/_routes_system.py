"""Health, installed suites and the server's hardware."""

from __future__ import annotations

import threading
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool

from torchsmith.interfaces import HardwareInfo

from ._auth import read_access
from ._http import json_text
from ._suites import installed, suite

router = APIRouter(tags=["system"], dependencies=[Depends(read_access)])
_hardware_lock = threading.Lock()


@router.get("/health", summary="Liveness and the installed suites")
async def health(request: Request) -> dict[str, Any]:
    from . import __version__

    suites = getattr(request.app.state, "suites", None)
    if suites is None:  # reading package metadata takes milliseconds: once per app
        suites = request.app.state.suites = installed()
    return {
        "status": "ok",
        "version": __version__,
        "read_access": request.app.state.settings.read_access,
        "suites": suites,
    }


def _detect(request: Request) -> str:
    with _hardware_lock:  # detection imports torch once; later calls hit the cache
        cached: str | None = getattr(request.app.state, "hardware_json", None)
        if cached is None:
            info = suite("testing", "detect_hardware").detect_hardware()
            cached = HardwareInfo.model_validate(info.model_dump()).write()
            request.app.state.hardware_json = cached
        return cached


@router.get(
    "/hardware",
    response_model=HardwareInfo,
    summary="The server's HardwareInfo (torchsmith.testing.detect_hardware)",
)
async def hardware(request: Request) -> Response:
    return json_text(await run_in_threadpool(_detect, request))
