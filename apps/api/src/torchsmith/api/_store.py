"""The embedded DuckDB store: jobs, their parameters and every event they emitted.

Only the server process writes here; workers send their events over a pipe.
One connection is shared behind a lock (DuckDB statements on this data take
well under a millisecond), which keeps the file consistent under FastAPI's
thread pool.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb

from torchsmith.interfaces import JobStatus, TorchsmithError

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS jobs (
        id VARCHAR PRIMARY KEY,
        kind VARCHAR NOT NULL,
        owner VARCHAR,
        params VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        created_at DOUBLE NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS job_events (
        job_id VARCHAR NOT NULL,
        seq INTEGER NOT NULL,
        type VARCHAR NOT NULL,
        record VARCHAR NOT NULL
    )""",
]

INTERRUPTED = "interrupted: the server stopped while this job was {state}"


class Store:
    """Jobs and job events in one DuckDB file under the data directory."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(str(path))
        except duckdb.IOException as exc:
            held = "lock" in str(exc).lower()  # else damaged, unreadable, ...: say only that
            advice = (
                " Is another torchsmith server using this data directory? Stop it or pass "
                "another --data-dir."
                if held
                else ""
            )
            raise TorchsmithError(f"cannot open the store {path}: {exc}{advice}") from exc
        self._lock = threading.Lock()
        for statement in _SCHEMA:
            self._con.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._con.close()

    # ------------------------------------------------------------ jobs

    def add_job(self, status: JobStatus, params: dict[str, Any], owner: str | None) -> None:
        with self._lock:
            self._con.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?)",
                [
                    status.id,
                    status.kind,
                    owner,
                    json.dumps(params),
                    status.write(),
                    status.created_at,
                ],
            )

    def save_status(self, status: JobStatus) -> None:
        with self._lock:
            self._con.execute(
                "UPDATE jobs SET status = ? WHERE id = ?", [status.write(), status.id]
            )

    def jobs(self) -> list[tuple[JobStatus, dict[str, Any], str | None]]:
        """Every job, oldest first, with its parameters and owner."""
        with self._lock:
            rows = self._con.execute(
                "SELECT status, params, owner FROM jobs ORDER BY created_at"
            ).fetchall()
        return [(JobStatus.read(s), json.loads(p), o) for s, p, o in rows]

    def mark_interrupted(self) -> list[JobStatus]:
        """Fail every job a previous server left queued or running; returns them."""
        changed = []
        for status, _, _ in self.jobs():
            if status.done:
                continue
            status.error = INTERRUPTED.format(state=status.state)
            status.state = "failed"
            status.finished_at = time.time()
            self.save_status(status)
            self.append_events(status.id, [("status", status.write())], first_seq=None)
            changed.append(status)
        return changed

    # ------------------------------------------------------------ events

    def next_seq(self, job_id: str) -> int:
        with self._lock:
            row = self._con.execute(
                "SELECT coalesce(max(seq) + 1, 0) FROM job_events WHERE job_id = ?", [job_id]
            ).fetchone()
        return int(row[0]) if row else 0

    def append_events(
        self, job_id: str, messages: Iterable[tuple[str, str]], *, first_seq: int | None
    ) -> int:
        """Store (type, record JSON) messages numbered from ``first_seq``; returns the next seq."""
        seq = self.next_seq(job_id) if first_seq is None else first_seq
        rows = []
        for kind, record in messages:
            rows.append((job_id, seq, kind, record))
            seq += 1
        if rows:
            placeholders = ", ".join(["(?, ?, ?, ?)"] * len(rows))
            flat = [value for row in rows for value in row]
            with self._lock:
                self._con.execute(f"INSERT INTO job_events VALUES {placeholders}", flat)
        return seq

    def events(
        self, job_id: str, *, types: tuple[str, ...] = ("event", "status"), after: int = -1
    ) -> list[tuple[int, str, str]]:
        """(seq, type, record JSON) of a job's stored messages, in order."""
        marks = ", ".join("?" * len(types))
        with self._lock:
            rows = self._con.execute(
                f"SELECT seq, type, record FROM job_events WHERE job_id = ? AND seq > ? "
                f"AND type IN ({marks}) ORDER BY seq",
                [job_id, after, *types],
            ).fetchall()
        return [(int(s), str(t), str(r)) for s, t, r in rows]
