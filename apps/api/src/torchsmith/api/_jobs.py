"""The job manager: long work in its own process, watched by a bounded pool of threads.

Each job runs in a fresh "spawn" process, so a job that crashes, leaks or hangs
cannot take the server with it; at most ``Settings.workers`` run at once and the
rest wait in order. A supervisor thread per running job reads the job's pipe,
persists every message in the store before publishing it to WebSocket clients,
and enforces cancellation and the timeout by terminating the process.

States (interfaces ``JobStatus.state``)::

    queued -> running -> succeeded | failed | cancelled | timed_out
    queued -> cancelled                  (cancelled before it started)
    queued | running -> failed           (server stopped: "interrupted: ...")
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from torchsmith.interfaces import JobStatus, TorchsmithError

from ._hub import EventHub, Message
from ._settings import Settings
from ._store import INTERRUPTED, Store
from ._worker import child_main

log = logging.getLogger(__name__)

DEFAULT_RUNNERS = {
    "generate": "torchsmith.api._tasks:run_generate",
    "test": "torchsmith.api._tasks:run_test",
    "bench": "torchsmith.api._tasks:run_bench",
    "train": "torchsmith.api._tasks:run_train",
}
_PROGRESS_EVERY_S = 0.5
_SHUTDOWN = "shutdown"


class QueueFullError(TorchsmithError):
    """As many jobs as the server queues are waiting already (``Settings.max_queued``)."""


class JobNotFoundError(TorchsmithError, KeyError):
    """No job has this id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(eq=False)
class _Job:
    status: JobStatus
    params: dict[str, Any]
    owner: str | None
    timeout_s: float = 0.0
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str = ""
    progress: float | None = None
    started: bool = False
    seq: int = 0
    result: dict[str, Any] | None = None
    error: str | None = None
    status_json: str = ""
    last_progress_save: float = 0.0


def _message(seq: int, kind: str, record: str, final: bool = False) -> Message:
    return Message(seq, kind, f'{{"seq":{seq},"type":"{kind}","record":{record}}}', final)


class JobManager:
    """Submits, runs, cancels and remembers jobs; one per app."""

    def __init__(self, store: Store, hub: EventHub, settings: Settings) -> None:
        self.store = store
        self.hub = hub
        self.settings = settings
        self.runners = {**DEFAULT_RUNNERS, **settings.runners}
        self._ctx = multiprocessing.get_context("spawn")
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="torchsmith-job")
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._closed = False
        # kind -> called in the server with a succeeded job's result; returns the result to keep.
        self.finishers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
        for status in store.mark_interrupted():
            log.warning("job %s was %s when the server stopped", status.id, status.error)
        for status, params, owner in store.jobs():
            job = _Job(status=status, params=params, owner=owner)
            job.status_json = status.write()
            self._jobs[status.id] = job

    # ------------------------------------------------------------ public

    def submit(
        self,
        kind: str,
        params: dict[str, Any],
        *,
        owner: str | None = None,
        timeout_s: float | None = None,
    ) -> JobStatus:
        if kind not in self.runners:
            raise TorchsmithError(f"no runner for job kind {kind!r}; known: {sorted(self.runners)}")
        if self._closed:
            raise TorchsmithError("the server is shutting down; submit the job again later")
        with self._lock:
            waiting = sum(job.status.state == "queued" for job in self._jobs.values())
        if waiting >= self.settings.max_queued:
            raise QueueFullError(
                f"{waiting} jobs are queued already (at most {self.settings.max_queued}); "
                "submit again once some have started"
            )
        limit = min(timeout_s or self.settings.job_timeout_s, self.settings.max_job_timeout_s)
        status = JobStatus(id=secrets.token_hex(8), kind=kind)  # type: ignore[arg-type]
        job = _Job(status=status, params=params, owner=owner, timeout_s=limit)
        job.status_json = status.write()
        self.store.add_job(status, params, owner)
        with self._lock:
            self._jobs[status.id] = job
        self._update(job)
        self._pool.submit(self._run, job)
        return status.model_copy()

    def get(self, job_id: str) -> JobStatus:
        return self._job(job_id).status.model_copy()

    def status_json(self, job_id: str) -> str:
        """The job's JobStatus as JSON text, without copying or re-validating it."""
        return self._job(job_id).status_json

    def params(self, job_id: str) -> dict[str, Any]:
        return dict(self._job(job_id).params)

    def list_json(
        self, *, kind: str | None = None, state: str | None = None, limit: int = 100
    ) -> list[str]:
        """Newest first, as JSON texts."""
        with self._lock:
            jobs = list(self._jobs.values())
        picked = [
            j.status_json
            for j in reversed(jobs)
            if (kind is None or j.status.kind == kind)
            and (state is None or j.status.state == state)
        ]
        return picked[:limit]

    def cancel(self, job_id: str, reason: str = "cancelled on request") -> JobStatus:
        """Stop a job: a queued one ends at once, a running one when its process is gone."""
        job = self._job(job_id)
        finish_now = False
        with self._lock:
            if not job.status.done and not job.cancel.is_set():
                job.cancel_reason = reason
                job.cancel.set()
                finish_now = not job.started
        if finish_now:
            self._finish_cancelled(job)
        return job.status.model_copy()

    def wait(self, job_id: str, timeout: float = 30.0) -> JobStatus:
        """Block until the job is done (for tests and scripts)."""
        deadline = time.monotonic() + timeout
        while not (status := self.get(job_id)).done:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {status.state} after {timeout} s")
            time.sleep(0.02)
        return status

    def close(self) -> None:
        """Stop every job (running ones are terminated and marked interrupted) and the pool."""
        self._closed = True
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            if not job.status.done:
                job.cancel_reason = _SHUTDOWN
                job.cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        for job in jobs:  # queued jobs whose futures were cancelled never ran
            if not job.status.done:
                self._finish(job, "failed", INTERRUPTED.format(state=job.status.state))

    # ------------------------------------------------------------ running

    def _job(self, job_id: str) -> _Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFoundError(f"no job with id {job_id!r}")
        return job

    def _run(self, job: _Job) -> None:
        try:
            self._run_unsafe(job)
        except Exception as exc:  # the supervisor itself failed: never leave a job running
            log.exception("supervising job %s failed", job.status.id)
            if not job.status.done:
                self._finish(job, "failed", f"internal error while supervising the job: {exc}")

    def _run_unsafe(self, job: _Job) -> None:
        with self._lock:
            if job.cancel.is_set():  # cancelled while queued: cancel() or close() ends it
                return
            job.started = True
        workdir = self.settings.jobs_dir / job.status.id
        workdir.mkdir(parents=True, exist_ok=True)
        recv, send = self._ctx.Pipe(duplex=False)
        runner = self.runners[job.status.kind]
        proc = self._ctx.Process(
            target=child_main,
            args=(job.status.id, runner, job.params, str(workdir), send, 1, os.getpid()),
            name=f"torchsmith-job-{job.status.id}",
        )
        proc.start()
        send.close()  # the child holds the only write end now: EOF means it exited
        self._update(job, state="running", started_at=time.time())
        ending = self._watch(job, proc, recv)
        self._stop(proc)
        recv.close()
        if ending == "cancelled":
            self._finish_cancelled(job)
        elif ending == "timed_out":
            self._finish(job, "timed_out", f"the job exceeded its timeout of {job.timeout_s:g} s")
        elif job.result is not None and (why := self._apply_finisher(job)):
            self._finish(job, "failed", why)
        elif job.result is not None:
            self._finish(job, "succeeded", None, result=job.result, progress=1.0)
        else:
            code = proc.exitcode
            why = job.error or (
                f"the job process exited with code {code} without a result "
                f"({'killed by signal ' + str(-code) if code and code < 0 else 'it crashed'})"
            )
            self._finish(job, "failed", why)

    def _apply_finisher(self, job: _Job) -> str | None:
        """Run the kind's finisher on the result; the error text if it failed."""
        finisher = self.finishers.get(job.status.kind)
        if finisher is None or job.result is None:
            return None
        try:
            job.result = finisher(job.result)
        except Exception as exc:
            log.exception("storing the result of job %s failed", job.status.id)
            return f"the job ran, but storing its result failed: {type(exc).__name__}: {exc}"
        return None

    def _watch(self, job: _Job, proc: BaseProcess, recv: Connection) -> str:
        """Relay messages until the process exits, is cancelled or runs out of time."""
        deadline = time.monotonic() + job.timeout_s
        while True:
            if job.cancel.is_set():
                return "cancelled"
            if time.monotonic() > deadline:
                return "timed_out"
            try:
                ready = recv.poll(0.1)
            except (EOFError, OSError):
                return "exited"
            if ready:
                batch, eof = _drain(recv)
                self._handle(job, batch)
                if eof:
                    return "exited"
            elif not proc.is_alive():
                return "exited"  # exited without closing the pipe cleanly; nothing left

    def _handle(self, job: _Job, messages: list[tuple[str, Any]]) -> None:
        events: list[str] = []
        for kind, payload in messages:
            if kind == "event":
                events.append(str(payload))
            elif kind == "progress":
                job.progress = float(payload)
            elif kind == "result":
                job.result = json.loads(json.dumps(payload, default=str))
            elif kind == "error":
                job.error = str(payload)
        if events:
            self._append(job, [("event", text) for text in events])
        now = time.monotonic()
        if job.progress is not None and now - job.last_progress_save > _PROGRESS_EVERY_S:
            job.last_progress_save = now
            self._update(job, progress=job.progress)

    def _stop(self, proc: BaseProcess) -> None:
        """Terminate the job and what it started (the group it leads), then kill."""
        group = _leads_group(proc)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.is_alive():
                _send(proc, sig, group)
                proc.join(3)
        if group:  # leftovers, e.g. data loader workers of a terminated training job
            _send(proc, signal.SIGKILL, group)
        proc.join(3)

    # ------------------------------------------------------------ state

    def _finish_cancelled(self, job: _Job) -> None:
        if job.cancel_reason == _SHUTDOWN:
            self._finish(job, "failed", INTERRUPTED.format(state=job.status.state))
        else:
            self._finish(job, "cancelled", job.cancel_reason)

    def _finish(self, job: _Job, state: str, error: str | None, **changes: Any) -> None:
        self._update(job, final=True, state=state, error=error, finished_at=time.time(), **changes)

    def _update(self, job: _Job, final: bool = False, **changes: Any) -> None:
        """Persist and publish the job's new status, then show it to readers.

        Readers (``get``, ``wait``, the REST routes) see a new state only once it is
        stored with its history, and never a half-updated status.
        """
        status = job.status.model_copy(update=changes)
        text = status.write()
        self.store.save_status(status)
        self._append(job, [("status", text)], final=final)
        with self._lock:
            job.status, job.status_json = status, text

    def _append(self, job: _Job, items: list[tuple[str, str]], final: bool = False) -> None:
        with self._lock:  # one writer per job at a time keeps seq dense and ordered
            first = job.seq
            job.seq = self.store.append_events(job.status.id, items, first_seq=first)
        messages = [
            _message(first + i, kind, text, final and i == len(items) - 1)
            for i, (kind, text) in enumerate(items)
        ]
        self.hub.publish(job.status.id, messages)


def _send(proc: BaseProcess, sig: signal.Signals, group: bool) -> None:
    pid = proc.pid
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _leads_group(proc: BaseProcess) -> bool:
    """Whether the job, still running, leads its own process group (it makes one at start)."""
    if proc.pid is None or not proc.is_alive():
        return False
    try:
        return os.getpgid(proc.pid) == proc.pid
    except (ProcessLookupError, PermissionError):
        return False


def _drain(recv: Connection, limit: int = 1000) -> tuple[list[tuple[str, Any]], bool]:
    """The messages waiting on the pipe, and whether it reached end of file."""
    batch: list[tuple[str, Any]] = []
    try:
        while len(batch) < limit:
            batch.append(recv.recv())
            if not recv.poll(0):
                break
    except (EOFError, OSError):
        return batch, True
    return batch, False
