from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from torchsmith.api import KeyStore, Settings, create_app

HERE = Path(__file__).parent
if str(HERE) not in sys.path:  # spawned job processes import the test runners by name
    sys.path.insert(0, str(HERE))

TASKS = "torchsmith_api_testtasks"
TEST_RUNNERS = {
    "train": f"{TASKS}:emit_steps",
    "generate": f"{TASKS}:write_model",
    "test": f"{TASKS}:emit_steps",
    "bench": f"{TASKS}:fake_bench",
}


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"data_dir": tmp_path / "data", "runners": TEST_RUNNERS}
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def api_key(settings: Settings) -> str:
    _, secret = KeyStore(settings.keys_path).create("tester")
    return secret


@pytest.fixture
def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def wait_done(client: TestClient, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}").json()
        if status["state"] in ("succeeded", "failed", "cancelled", "timed_out"):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {status['state']}")
        time.sleep(0.05)


@pytest.fixture
def live_server(settings: Settings) -> Iterator[str]:
    """The app under a real uvicorn server on a free loopback port; yields its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    from torchsmith.api._cli import ws_protocol

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", ws=ws_protocol()
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)
