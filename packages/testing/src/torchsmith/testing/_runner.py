"""Running a ModelTest file in its own pytest process and reading back its report.

This is what a service (the torchsmith API, a CI job) calls to test a generated model:
the model's code runs in a child process, so a crash or a hang cannot take the caller down.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from torchsmith.interfaces import ConfigError, TorchsmithError

from ._device import DEVICE_ENV
from ._report import SuiteReport, read_report

# pytest exit codes 0 (all passed) and 1 (some failed) both leave a complete report.
_COMPLETED = (0, 1)


def run_model_tests(
    path: str | os.PathLike[str],
    *,
    report_path: str | os.PathLike[str] | None = None,
    run_slow: bool = False,
    device: str | None = None,
    pytest_args: Sequence[str] = (),
    timeout: float | None = 1800.0,
) -> SuiteReport:
    """Run pytest on ``path`` (a test file or folder) in a child process; return its report.

    ``device`` sets TORCHSMITH_DEVICE for the run; ``report_path`` keeps the JSON (and .md)
    report, otherwise it goes to a temporary folder. Failing checks are part of the report;
    a run that could not test at all (no tests, a usage error, a timeout) raises.
    """
    target = Path(path).resolve()
    if not target.exists():
        raise ConfigError(f"no test file or folder at {target}")
    with tempfile.TemporaryDirectory(prefix="torchsmith-tests-") as scratch:
        report = Path(report_path).resolve() if report_path else Path(scratch) / "report.json"
        command = [sys.executable, "-m", "pytest", str(target), "-q", "-p", "no:cacheprovider"]
        command += [f"--torchsmith-report={report}", *(["--run-slow"] if run_slow else [])]
        command += list(pytest_args)
        env = dict(os.environ)
        if device is not None:
            env[DEVICE_ENV] = device
        try:
            done = subprocess.run(
                command,
                cwd=target.parent if target.is_file() else target,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise TorchsmithError(f"pytest on {target} did not finish in {timeout} s") from None
        if done.returncode not in _COMPLETED or not report.exists():
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
            raise TorchsmithError(
                f"pytest on {target} exited with code {done.returncode} without a complete "
                f"report:\n{tail}"
            )
        return read_report(report)
