"""The job manager on real spawned processes: results, crashes, cancel, timeout, restart."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from torchsmith.api import EventHub, JobManager, JobNotFoundError, Settings
from torchsmith.api._store import Store
from torchsmith.interfaces import JobStatus, TrainingEvent

TASKS = "torchsmith_api_testtasks"


@pytest.fixture
def open_manager(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., JobManager]]:
    opened: list[tuple[JobManager, Store]] = []

    def open_(**overrides: object) -> JobManager:
        settings = make_settings(**overrides)
        store = Store(settings.store_path)
        manager = JobManager(store, EventHub(), settings)
        opened.append((manager, store))
        return manager

    yield open_
    for manager, store in opened:
        manager.close()
        store.close()


def test_a_job_runs_in_its_own_process_and_its_events_are_stored(open_manager) -> None:
    manager = open_manager(runners={"train": f"{TASKS}:emit_steps"})
    status = manager.submit("train", {"steps": 4}, owner="k1")
    assert status.state == "queued"
    done = manager.wait(status.id)
    assert done.state == "succeeded", done.error
    assert done.result == {"steps": 4}
    assert done.progress == 1.0
    assert done.started_at is not None and done.finished_at >= done.started_at
    events = [
        TrainingEvent.read(r) for _, _, r in manager.store.events(status.id, types=("event",))
    ]
    assert [e.kind for e in events] == ["step"] * 4 + ["end"]
    assert [e.metrics.get("loss") for e in events[:4]] == [1.0, 0.5, 1 / 3, 0.25]
    assert {e.run_id for e in events} == {status.id}
    states = [
        JobStatus.read(r).state for _, _, r in manager.store.events(status.id, types=("status",))
    ]
    assert states[0] == "queued" and states[-1] == "succeeded" and "running" in states
    seqs = [s for s, _, _ in manager.store.events(status.id)]
    assert seqs == list(range(len(seqs)))


def test_a_crashing_job_fails_with_its_exit_code_and_the_manager_goes_on(open_manager) -> None:
    manager = open_manager(runners={"train": f"{TASKS}:crash", "test": f"{TASKS}:emit_steps"})
    crashed = manager.wait(manager.submit("train", {}).id)
    assert crashed.state == "failed"
    assert "exited with code 3" in (crashed.error or "")
    assert manager.store.events(crashed.id, types=("event",)), "events before the crash are kept"
    after = manager.wait(manager.submit("test", {"steps": 1}).id)
    assert after.state == "succeeded"


def test_an_exception_in_the_job_is_its_error_message(open_manager) -> None:
    manager = open_manager(runners={"train": f"{TASKS}:bad_config"})
    done = manager.wait(manager.submit("train", {}).id)
    assert done.state == "failed"
    assert done.error == "ConfigError: optimizer.lr must be > 0, got -1"
    log = (manager.settings.jobs_dir / done.id / "job.log").read_text()
    assert "checking the optimizer" in log, "the job's output goes to its log file"


def test_cancel_terminates_a_running_job_and_a_queued_one_never_starts(open_manager) -> None:
    manager = open_manager(runners={"train": f"{TASKS}:hang"}, workers=1)
    running = manager.submit("train", {})
    queued = manager.submit("train", {})
    deadline = time.monotonic() + 20
    while manager.get(running.id).state != "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert manager.get(queued.id).state == "queued", "one worker: the second job waits"
    manager.cancel(queued.id, reason="not needed")
    assert manager.get(queued.id).state == "cancelled", "a queued job ends at once"
    assert manager.get(running.id).state == "running"
    manager.cancel(running.id, reason="stop it")
    first, second = manager.wait(running.id), manager.wait(queued.id)
    assert (first.state, first.error) == ("cancelled", "stop it")
    assert (second.state, second.started_at) == ("cancelled", None)


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        state = stat.read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has exited; only its entry waits to be reaped


def test_stopping_a_job_also_stops_the_processes_it_started(open_manager) -> None:
    manager = open_manager(runners={"train": f"{TASKS}:spawn_and_hang"})
    job = manager.submit("train", {})
    pid_file = manager.settings.jobs_dir / job.id / "child.pid"
    deadline = time.monotonic() + 30
    while not pid_file.exists():
        assert time.monotonic() < deadline, "the job never started its child"
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    assert _alive(grandchild)
    manager.cancel(job.id)
    assert manager.wait(job.id).state == "cancelled"
    deadline = time.monotonic() + 10
    while _alive(grandchild):
        assert time.monotonic() < deadline, "the job's child outlived the job"
        time.sleep(0.05)


def test_a_job_past_its_timeout_is_killed(open_manager) -> None:
    manager = open_manager(runners={"train": f"{TASKS}:hang"})
    done = manager.wait(manager.submit("train", {}, timeout_s=1.0).id)
    assert done.state == "timed_out"
    assert "timeout of 1 s" in (done.error or "")


def test_timeouts_are_capped_by_the_settings(open_manager) -> None:
    manager = open_manager(runners={"train": f"{TASKS}:hang"}, max_job_timeout_s=0.5)
    done = manager.wait(manager.submit("train", {}, timeout_s=100.0).id)
    assert done.state == "timed_out"


def test_closing_marks_running_jobs_interrupted(open_manager) -> None:
    manager = open_manager(runners={"train": f"{TASKS}:hang"}, workers=1)
    running = manager.submit("train", {})
    queued = manager.submit("train", {})
    while manager.get(running.id).state != "running":
        time.sleep(0.02)
    manager.close()
    for job_id, was in ((running.id, "running"), (queued.id, "queued")):
        status = manager.get(job_id)
        assert status.state == "failed"
        assert status.error == f"interrupted: the server stopped while this job was {was}"


def test_a_restart_fails_jobs_the_previous_server_left_unfinished(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    store = Store(settings.store_path)
    store.add_job(JobStatus(id="a" * 16, kind="train", state="running"), {"x": 1}, "k")
    store.add_job(JobStatus(id="b" * 16, kind="bench", state="succeeded"), {}, None)
    store.close()  # the old server died without cleaning up

    store = Store(settings.store_path)
    manager = JobManager(store, EventHub(), settings)
    try:
        assert manager.get("a" * 16).state == "failed"
        assert "interrupted" in (manager.get("a" * 16).error or "")
        assert manager.get("b" * 16).state == "succeeded"
        assert manager.params("a" * 16) == {"x": 1}
        kinds = [t for _, t, _ in store.events("a" * 16)]
        assert kinds == ["status"], "the interruption is in the job's history"
        listed = [json.loads(t)["id"] for t in manager.list_json()]
        assert listed == ["b" * 16, "a" * 16]
    finally:
        manager.close()
        store.close()


def test_unknown_ids_and_kinds_are_errors(open_manager) -> None:
    manager = open_manager()
    with pytest.raises(JobNotFoundError, match="no job with id"):
        manager.get("0" * 16)
    with pytest.raises(Exception, match="no runner for job kind 'paint'"):
        manager.submit("paint", {})


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie no reaper collected does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_job_ends_when_its_server_is_killed_with_sigkill() -> None:
    """A SIGKILLed server cannot stop its jobs; each watches for it and ends its group."""
    import signal
    import subprocess
    import sys
    import time

    job = (
        "import os, sys, time; os.setpgid(0, 0)\n"
        "from torchsmith.api._worker import _end_with_the_server\n"
        "_end_with_the_server(int(sys.argv[1]), every_s=0.05)\n"
        "print('watching', flush=True)\n"
        "time.sleep(120)\n"
    )
    server = (
        "import os, subprocess, sys, time\n"
        f"job = subprocess.Popen([sys.executable, '-c', {job!r}, str(os.getpid())])\n"
        "print(job.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", server], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    job_pid = int(proc.stdout.readline())
    assert proc.stdout.readline() == "watching\n"  # the job shares the server's stdout
    assert _running(job_pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _running(job_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(job_pid)
