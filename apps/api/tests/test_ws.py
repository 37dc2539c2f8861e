"""The job WebSocket: live events, history for late subscribers, refusals, slow clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from conftest import wait_done
from torchsmith.api import EventHub, Settings, create_app
from torchsmith.api._hub import Message
from torchsmith.interfaces import JobStatus, TrainingEvent


def _read_all(ws) -> list[dict]:
    """Every message until the server closes; the close must be a normal one (1000)."""
    messages = []
    with pytest.raises(WebSocketDisconnect) as closed:  # noqa: PT012 - the loop ends in it
        while True:
            messages.append(json.loads(ws.receive_text()))
    assert closed.value.code == 1000
    return messages


def test_a_live_subscriber_gets_every_event_then_the_final_status(
    client: TestClient, auth: dict[str, str]
) -> None:
    job = client.post(
        "/api/v1/train", json={"recipe": "r", "overrides": ["steps=6", "delay=0.05"]}, headers=auth
    ).json()
    with client.websocket_connect(f"/api/v1/ws/jobs/{job['id']}") as ws:
        messages = _read_all(ws)
    seqs = [m["seq"] for m in messages]
    assert seqs == list(range(len(seqs))), "in order, nothing missing, nothing twice"
    events = [TrainingEvent.read(m["record"]) for m in messages if m["type"] == "event"]
    assert [e.kind for e in events] == ["step"] * 6 + ["end"]
    final = JobStatus.read(messages[-1]["record"])
    assert final.state == "succeeded"


def test_a_late_subscriber_first_receives_the_history(
    client: TestClient, auth: dict[str, str]
) -> None:
    job = client.post("/api/v1/train", json={"recipe": "r"}, headers=auth).json()
    wait_done(client, job["id"])
    stored = client.get(f"/api/v1/jobs/{job['id']}/events").json()
    with client.websocket_connect(f"/api/v1/ws/jobs/{job['id']}") as ws:
        replayed = _read_all(ws)
    assert replayed == stored
    assert replayed[-1]["record"]["state"] == "succeeded"


def test_unknown_jobs_and_missing_keys_are_refused_with_a_close_code(
    client: TestClient, make_settings: Callable[..., Settings], api_key: str
) -> None:
    with (
        client.websocket_connect("/api/v1/ws/jobs/0123456789abcdef") as ws,
        pytest.raises(WebSocketDisconnect) as caught,
    ):
        ws.receive_text()
    assert caught.value.code == 4404
    with TestClient(create_app(make_settings(read_access="key"))) as private:
        with (
            private.websocket_connect("/api/v1/ws/jobs/0123456789abcdef") as ws,
            pytest.raises(WebSocketDisconnect) as caught,
        ):
            ws.receive_text()
        assert caught.value.code == 4401
        with (
            private.websocket_connect(f"/api/v1/ws/jobs/0123456789abcdef?key={api_key}") as ws,
            pytest.raises(WebSocketDisconnect) as caught,
        ):
            ws.receive_text()
        assert caught.value.code == 4404, "the key was accepted; the job does not exist"


def test_a_full_queue_drops_for_that_client_only_and_counts() -> None:
    async def scenario() -> tuple[int, int, list[int]]:
        hub = EventHub(queue_size=100)
        hub.bind(asyncio.get_running_loop())
        slow = hub.subscribe("j", queue_size=3)
        fast = hub.subscribe("j")
        hub.publish("j", [Message(i, "event", "{}") for i in range(10)])
        await asyncio.sleep(0.05)  # publish hands over to the loop
        got = [fast.queue.get_nowait().seq for _ in range(fast.queue.qsize())]
        return slow.dropped, slow.unreported_drops() + slow.unreported_drops(), got

    dropped, reported_once, fast_got = asyncio.run(scenario())
    assert dropped == 7
    assert reported_once == 7, "a drop count is reported once"
    assert fast_got == list(range(10))


class _SlowSocket:
    """A client that cannot read until ``gate`` opens, and never disconnects."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.sent: list[dict] = []
        self.close_code: int | None = None

    async def send_text(self, text: str) -> None:
        await self.gate.wait()
        self.sent.append(json.loads(text))

    async def receive(self) -> dict:
        await asyncio.Event().wait()
        return {}

    async def close(self, code: int = 1000) -> None:
        self.close_code = code


class _Rows:
    def __init__(self) -> None:
        self.rows: list[tuple[int, str, str]] = []
        self.done = False

    def events(self, job_id: str, *, after: int = -1, types: tuple = ()) -> list:
        return [r for r in self.rows if r[0] > after]

    def get(self, job_id: str) -> _Rows:
        return self


def test_a_slow_client_is_told_what_it_missed_and_catches_up_from_the_store() -> None:
    from torchsmith.api._routes_ws import _stream

    async def scenario() -> _SlowSocket:
        hub = EventHub()
        hub.bind(asyncio.get_running_loop())
        sub = hub.subscribe("j", queue_size=2)
        socket, rows = _SlowSocket(), _Rows()
        task = asyncio.create_task(_stream(socket, sub, rows, rows, "j"))  # type: ignore[arg-type]

        def put(seq: int, final: bool = False) -> None:
            text = f'{{"seq":{seq},"type":"event","record":{{"step":{seq}}}}}'
            rows.rows.append((seq, "event", f'{{"step":{seq}}}'))
            hub.publish("j", [Message(seq, "event", text, final)])

        await asyncio.sleep(0.05)  # history (empty) replayed; the stream waits for messages
        put(0)
        await asyncio.sleep(0.05)  # the stream took 0 and is stuck sending it
        for seq in range(1, 10):
            put(seq)
        rows.done = True
        put(10, final=True)
        await asyncio.sleep(0.05)
        assert sub.dropped == 8
        socket.gate.set()
        await asyncio.wait_for(task, 10)
        return socket

    socket = asyncio.run(scenario())
    kinds = [m.get("seq", "dropped") for m in socket.sent]
    assert kinds == [0, "dropped", 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert socket.sent[1] == {"type": "dropped", "count": 8}
    assert socket.close_code == 1000
