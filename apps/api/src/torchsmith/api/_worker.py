"""What runs inside a job's own process (multiprocessing "spawn").

The child resolves its runner from a "module:function" reference, runs it with
a :class:`JobContext`, and sends everything back over one pipe as small tuples:
``("event", TrainingEvent JSON)``, ``("progress", fraction)``,
``("result", dict)`` or ``("error", text)``. The server never unpickles
anything but these tuples of plain values, from processes it started itself.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from torchsmith.interfaces import TorchsmithError, TrainingEvent

Runner = Callable[[dict[str, Any], "JobContext"], dict[str, Any]]
log = logging.getLogger(__name__)


@dataclass
class JobContext:
    """Handed to a runner: where to write files and how to report. An EventSink."""

    job_id: str
    workdir: Path
    conn: Connection

    def emit(self, event: TrainingEvent) -> None:
        """EventSink.emit: forward one interfaces TrainingEvent to the server."""
        if event.run_id is None:
            event = event.model_copy(update={"run_id": self.job_id})
        self.conn.send(("event", event.write()))

    def progress(self, fraction: float) -> None:
        self.conn.send(("progress", min(1.0, max(0.0, float(fraction)))))


def resolve(reference: str) -> Runner:
    """The function named by ``"package.module:function"``."""
    module_name, _, attr = reference.partition(":")
    if not module_name or not attr:
        raise TorchsmithError(f"runner {reference!r} is not of the form 'module:function'")
    func: Runner = getattr(importlib.import_module(module_name), attr)
    return func


def _log_to(path: Path) -> None:
    """Send this process's stdout and stderr (Python's and native code's) to the job's log."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for stream, target in ((sys.stdout, 1), (sys.stderr, 2)):
        with contextlib.suppress(Exception):
            stream.flush()
        os.dup2(fd, target)
    os.close(fd)


def _end_with_the_server(server: int, every_s: float = 1.0) -> None:
    """Watch, from a daemon thread, for the server that started this job to go away (killed
    with SIGKILL, it cannot stop its jobs): the job's process group is then killed, its
    DataLoader workers included. A restarted server marks the job failed ("interrupted"),
    so a job left running would only hold the machine. A job that never writes to its pipe
    (a pytest run, a hung job) would otherwise run on indefinitely."""

    def watch() -> None:
        while os.getppid() == server:
            time.sleep(every_s)
        log.warning("the server (pid %d) has gone: ending job process group", server)
        if os.getpgid(0) == os.getpid():  # a group of its own: never the server's or a shell's
            os.killpg(os.getpid(), signal.SIGKILL)
        os._exit(1)  # setpgid was refused: this process alone

    threading.Thread(target=watch, name="torchsmith-server-watch", daemon=True).start()


def child_main(
    job_id: str,
    reference: str,
    params: dict[str, Any],
    workdir: str,
    conn: Connection,
    threads: int,
    server: int | None = None,
) -> None:
    """Entry point of the job process; ``server``, the pid of the process that started it
    (passed, since by the time this runs it may be gone and the parent another)."""
    # Leave the server's cores to the server: fewer threads, lower priority.
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(threads))
    with contextlib.suppress(OSError):  # not permitted everywhere; the job still runs
        os.nice(10)
    with contextlib.suppress(OSError):  # its own process group: stopping it stops its children
        os.setpgid(0, 0)
    _log_to(Path(workdir) / "job.log")
    _end_with_the_server(os.getppid() if server is None else server)
    ctx = JobContext(job_id=job_id, workdir=Path(workdir), conn=conn)
    try:
        result = resolve(reference)(params, ctx)
        conn.send(("result", dict(result or {})))
    except TorchsmithError as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise SystemExit(1) from None
    except BaseException as exc:  # report everything, then exit non-zero
        tail = "".join(traceback.format_exception(exc)[-3:]).strip()
        conn.send(("error", f"{type(exc).__name__}: {exc}\n{tail}"))
        raise SystemExit(1) from None
    finally:
        conn.close()
