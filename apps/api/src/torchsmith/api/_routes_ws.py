"""``/ws/jobs/{id}``: a job's messages live, history first, never blocking the job.

Each text frame is ``{"seq": n, "type": "event" | "status", "record": {...}}`` with an
interfaces TrainingEvent or JobStatus as the record. A client that fell behind
gets ``{"type": "dropped", "count": n}`` before its next message. The server
closes the socket (code 1000) after the job's final status.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

from fastapi import APIRouter, HTTPException, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool

from ._auth import websocket_key
from ._http import JOB_ID_PATTERN
from ._hub import EventHub, Message, Subscription
from ._jobs import JobManager, JobNotFoundError
from ._origin import origin_allowed
from ._store import Store

router = APIRouter(tags=["jobs"])
_JOB_ID = re.compile(JOB_ID_PATTERN)


@router.websocket("/ws/jobs/{job_id}")
async def job_stream(websocket: WebSocket, job_id: str) -> None:
    # Accept first, so a refusal reaches the client as a close code and reason.
    await websocket.accept()
    settings = websocket.app.state.settings
    origin, host = websocket.headers.get("origin"), websocket.headers.get("host", "")
    if not origin_allowed(origin, host, settings.cors_origins):  # CORS does not cover this
        reason = f"a page of {origin} may not read jobs here (--cors-origin allows one)"
        await websocket.close(code=4403, reason=reason[:120])
        return
    try:
        websocket_key(websocket)
    except HTTPException as exc:
        await websocket.close(code=4401, reason=str(exc.detail)[:120])
        return
    manager: JobManager = websocket.app.state.jobs
    try:
        if not _JOB_ID.match(job_id):
            raise JobNotFoundError(job_id)
        manager.get(job_id)
    except JobNotFoundError:
        await websocket.close(code=4404, reason=f"no job with id {job_id!r}"[:120])
        return
    hub: EventHub = websocket.app.state.hub
    sub = hub.subscribe(job_id)
    try:
        await _stream(websocket, sub, websocket.app.state.store, manager, job_id)
    except WebSocketDisconnect:
        pass
    finally:
        hub.unsubscribe(sub)


async def _stream(
    websocket: WebSocket, sub: Subscription, store: Store, manager: JobManager, job_id: str
) -> None:
    # Subscribed before reading history, so nothing falls between the two; seq dedupes.
    last = await _replay(websocket, store, job_id, after=-1)
    if manager.get(job_id).done and sub.queue.empty():
        await websocket.close(code=1000)
        return
    closed = asyncio.ensure_future(_until_closed(websocket))
    try:
        while True:
            getter = asyncio.ensure_future(sub.queue.get())
            done, _ = await asyncio.wait(
                {getter, closed}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED
            )
            if closed in done:
                getter.cancel()
                return
            if not done:
                getter.cancel()
                if manager.get(job_id).done and sub.queue.empty():
                    # The final message was dropped for this client: catch up from the store.
                    await _replay(websocket, store, job_id, after=last)
                    await websocket.close(code=1000)
                    return
                continue
            message: Message = getter.result()
            if message.seq <= last:
                continue
            dropped = sub.unreported_drops()
            if dropped:
                await websocket.send_text(f'{{"type":"dropped","count":{dropped}}}')
            await websocket.send_text(message.text)
            last = message.seq
            if message.final:
                await websocket.close(code=1000)
                return
    finally:
        closed.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
            await closed


async def _replay(websocket: WebSocket, store: Store, job_id: str, *, after: int) -> int:
    """Send the stored messages after ``after``; returns the last seq sent."""
    last = after
    for seq, kind, record in await run_in_threadpool(store.events, job_id, after=after):
        await websocket.send_text(f'{{"seq":{seq},"type":"{kind}","record":{record}}}')
        last = seq
    return last


async def _until_closed(websocket: WebSocket) -> None:
    """Returns when the client goes away (clients send nothing we need)."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
