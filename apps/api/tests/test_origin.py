"""Pages of other sites cannot read a loopback server: foreign WebSocket origins and
rebound Host names are refused; keys in URLs never reach the server's log."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from conftest import wait_done
from torchsmith.api import Settings, create_app
from torchsmith.api._cli import _serve_parser, settings_from_args
from torchsmith.api._origin import RedactKeys, host_name, is_loopback


def _finished_job(client: TestClient, auth: dict[str, str]) -> str:
    job = client.post("/api/v1/train", json={"recipe": "r"}, headers=auth).json()
    wait_done(client, job["id"])
    return str(job["id"])


@pytest.mark.parametrize(
    ("origin", "accepted"),
    [(None, True), ("http://testserver", True), ("http://app.example", True),
     ("http://evil.example", False), ("http://testserver:8001", False), ("null", False)],
)  # fmt: skip
def test_a_job_websocket_takes_pages_of_its_own_origin_or_an_allowed_one(
    make_settings: Callable[..., Settings],
    api_key: str,
    origin: str | None,
    accepted: bool,
) -> None:
    settings = make_settings(cors_origins=("http://app.example/",))
    with TestClient(create_app(settings)) as client:
        job_id = _finished_job(client, {"Authorization": f"Bearer {api_key}"})
        headers = {} if origin is None else {"origin": origin}
        with client.websocket_connect(f"/api/v1/ws/jobs/{job_id}", headers=headers) as ws:
            if accepted:
                assert ws.receive_json()["seq"] == 0
            else:
                with pytest.raises(WebSocketDisconnect) as closed:
                    ws.receive_text()
                assert closed.value.code == 4403 and "may not read jobs" in closed.value.reason


def test_a_loopback_server_answers_its_own_names_only(
    make_settings: Callable[..., Settings], api_key: str
) -> None:
    settings = make_settings(allowed_hosts=("localhost", "127.0.0.1", "::1", "proxy.example"))
    app = create_app(settings)
    for base in ("http://localhost:8000", "http://127.0.0.1", "http://[::1]:8000",
                 "http://proxy.example"):  # fmt: skip
        with TestClient(app, base_url=base) as client:
            assert client.get("/api/v1/health").status_code == 200, base
    with TestClient(app, base_url="http://attacker.example:8000") as client:
        refused = client.get("/api/v1/health")
        assert refused.status_code == 400 and "'attacker.example' is not served" in refused.text
        url = "/api/v1/ws/jobs/0000000000000000"
        with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect(url) as ws:
            ws.receive_text()
        assert closed.value.code == 1008


def test_serve_on_loopback_limits_host_names_and_elsewhere_does_not() -> None:
    local = settings_from_args(_serve_parser().parse_args(["--allowed-host", "a.example"]))
    assert local.allowed_hosts == ("localhost", "127.0.0.1", "::1", "a.example")
    anywhere = settings_from_args(_serve_parser().parse_args(["--host", "0.0.0.0"]))
    assert anywhere.allowed_hosts == ()  # behind a proxy: its name is not known here
    named = settings_from_args(_serve_parser().parse_args(["--host", "::", "--allowed-host", "x"]))
    assert named.allowed_hosts == ("x",)
    assert [is_loopback(h) for h in ("127.0.0.2", "::1", "localhost", "0.0.0.0", "a.b")] == [
        True, True, True, False, False
    ]  # fmt: skip
    assert [host_name(h) for h in ("A.example:80", "[::1]:8000", "::1", "x")] == [
        "a.example", "::1", "::1", "x"
    ]  # fmt: skip


def test_a_key_in_a_logged_url_is_redacted() -> None:
    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5", "/api/v1/ws/jobs/ab?x=1&key=tsk_1.secret"), None,
    )  # fmt: skip
    assert RedactKeys().filter(record)
    assert record.getMessage().endswith(
        '"WebSocket /api/v1/ws/jobs/ab?x=1&key=<redacted>" [accepted]'
    )
    assert "secret" not in record.getMessage()
