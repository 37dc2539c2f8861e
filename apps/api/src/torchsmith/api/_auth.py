"""Who is calling: Bearer API keys, the read-access rule, and per-key submit rate limits."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, WebSocket
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ._keys import ApiKey, KeyStore
from ._settings import Settings

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="An API key from `torchsmith serve keys create NAME`, as `Bearer tsk_...`.",
)


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def check_key(keys: KeyStore, presented: str | None) -> ApiKey:
    """The key behind ``presented``; 401 naming what is wrong otherwise."""
    if not presented:
        raise _unauthorized(
            "this route needs an API key: send 'Authorization: Bearer <key>'; "
            "create one with 'torchsmith serve keys create NAME'"
        )
    key = keys.verify(presented)
    if key is None:
        raise _unauthorized("the API key is not valid (unknown, malformed or revoked)")
    return key


def require_key(
    request: Request,
    credentials: Credentials,
) -> ApiKey:
    """Dependency of every route that starts work or changes state."""
    return check_key(request.app.state.keys, credentials.credentials if credentials else None)


async def read_access(request: Request, credentials: Credentials) -> ApiKey | None:
    """Dependency of read routes: open when ``read_access`` is public, keyed otherwise.

    Async, so public reads (the hot path) skip FastAPI's thread pool; a key check may
    read the key file, so it runs in the pool.
    """
    settings: Settings = request.app.state.settings
    if settings.read_access == "public":
        return None
    presented = credentials.credentials if credentials else None
    return await run_in_threadpool(check_key, request.app.state.keys, presented)


def websocket_key(websocket: WebSocket) -> ApiKey | None:
    """Read access for a WebSocket: the Authorization header, or ``?key=`` from a browser."""
    settings: Settings = websocket.app.state.settings
    if settings.read_access == "public":
        return None
    header = websocket.headers.get("authorization", "")
    presented = header[7:] if header.lower().startswith("bearer ") else None
    presented = presented or websocket.query_params.get("key")
    return check_key(websocket.app.state.keys, presented)


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per key: ``burst`` at once, then ``per_minute`` sustained."""

    def __init__(self, burst: int, per_minute: float) -> None:
        self.burst = burst
        self.rate = per_minute / 60.0
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key_id: str) -> float:
        """Spend one token; returns 0, or the seconds to wait when the bucket is empty."""
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.setdefault(key_id, _Bucket(float(self.burst), now))
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate

    def refund(self, key_id: str) -> None:
        """Give back the token of a submission refused as invalid (422): a client fixing
        its request meets the 422 that names its mistake, not a 429."""
        with self._lock:
            bucket = self._buckets.get(key_id)
            if bucket is not None:
                bucket.tokens = min(self.burst, bucket.tokens + 1.0)


def submit_key(request: Request, key: Annotated[ApiKey, Depends(require_key)]) -> ApiKey:
    """Dependency of job-submitting routes: a key, within its rate limit (else 429)."""
    wait = request.app.state.limiter.take(key.key_id)
    if wait <= 0:  # spent: given back if the request turns out invalid (see refund)
        request.state.spent_token = key.key_id
    if wait > 0:
        raise HTTPException(
            429,
            detail=f"too many job submissions for key {key.key_id}; retry in {wait:.1f} s",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    return key


def refund_if_spent(request: Request) -> None:
    """Refund the submission token of ``request`` (a 422), if it spent one."""
    key_id = getattr(request.state, "spent_token", None)
    if key_id is not None:
        request.app.state.limiter.refund(key_id)
        request.state.spent_token = None


KeyRequired = Annotated[ApiKey, Depends(require_key)]
SubmitKey = Annotated[ApiKey, Depends(submit_key)]
