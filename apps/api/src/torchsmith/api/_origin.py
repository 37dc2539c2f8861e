"""Where a request comes from: the Host names a loopback server answers to, the origins a
job's WebSocket accepts, and API keys kept out of the server's logs.

A browser lets any site's page reach a server on 127.0.0.1: over a WebSocket (which CORS
does not cover, so the page's ``Origin`` must be checked), and by DNS rebinding (a name the
site controls, pointed at 127.0.0.1, which the browser then sends as ``Host``).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def host_name(host_header: str) -> str:
    """The host of a ``Host`` header, without its port: ``[::1]:8000`` is ``::1``."""
    value = host_header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def is_loopback(host: str) -> bool:
    """Whether a bind address (``--host``) is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve anywhere
        return False


class TrustedHosts:
    """ASGI middleware refusing a request, or a WebSocket, whose ``Host`` is not one of
    ``hosts`` (400, or close code 1008): what a page that rebinds its own name to the
    server's address sends."""

    def __init__(self, app: ASGIApp, hosts: Iterable[str]) -> None:
        self.app = app
        self.hosts = frozenset(host_name(h) for h in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = host_name(Headers(scope=scope).get("host", ""))
            if host not in self.hosts:
                if scope["type"] == "websocket":
                    await WebSocketClose(code=1008)(scope, receive, send)
                    return
                allowed = ", ".join(sorted(self.hosts))
                text = f"host {host!r} is not served here (allowed: {allowed}; --allowed-host)"
                await PlainTextResponse(text, status_code=400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def origin_allowed(origin: str | None, host_header: str, allowed: Iterable[str]) -> bool:
    """Whether a WebSocket from a page of ``origin`` may connect: no ``Origin`` (not a
    browser), the server's own (its address as the ``Host`` header has it), or one of the
    ``allowed`` (``--cors-origin``) origins."""
    if origin is None:
        return True
    if urlsplit(origin).netloc.lower() == host_header.strip().lower():
        return True
    return origin.rstrip("/") in {o.rstrip("/") for o in allowed}


_KEY_IN_URL = re.compile(r"([?&]key=)[^&\s\"']+")


class RedactKeys(logging.Filter):
    """Replaces ``?key=<secret>`` in a log record's message and arguments (uvicorn logs each
    request's and WebSocket's path with its query) by ``?key=<redacted>``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = _KEY_IN_URL.sub(r"\1<redacted>", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                _KEY_IN_URL.sub(r"\1<redacted>", a) if isinstance(a, str) else a
                for a in record.args
            )
        return True
