"""Where a benchmark ran: git state, hardware, software, and a fingerprint of it all.

The fingerprint hashes what changes timings (CPU model and count, memory, GPU, OS,
Python minor, torch and CUDA versions, thread count) and leaves out what does not (the
git commit, the hostname), so a CI pool of identical machines shares one fingerprint.
Set ``TORCHSMITH_BENCH_FINGERPRINT`` to force one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

from torchsmith.interfaces import Environment

logger = logging.getLogger(__name__)

FINGERPRINT_VARIABLE = "TORCHSMITH_BENCH_FINGERPRINT"


def _git(args: list[str], cwd: Path | None) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout.strip()
    return text if out.returncode == 0 and text else None


def git_state(cwd: Path | None = None) -> tuple[str | None, str | None]:
    """(commit, branch) of the checkout at ``cwd``; CI variables when git has none."""
    commit = _git(["rev-parse", "HEAD"], cwd) or os.environ.get("GITHUB_SHA")
    branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], cwd)
    if branch in (None, "HEAD"):  # detached, as in most CI checkouts
        branch = os.environ.get("GITHUB_HEAD_REF") or os.environ.get("GITHUB_REF_NAME") or branch
    return commit, branch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _gpu() -> str | None:
    import torch

    if not torch.cuda.is_available():  # asks the driver; torch stays uninitialised
        return None
    return _device_names()


# torch.cuda.get_device_name() initialises CUDA; asked here, the measuring process would
# then treat every case as CUDA work, so a child process asks instead.
_NAMES_SCRIPT = (
    "import torch; n = torch.cuda.device_count(); "
    "print(', '.join(torch.cuda.get_device_name(i) for i in range(n)))"
)


def _device_names(timeout: float = 120) -> str:
    """The CUDA device names as a child process sees them (same CUDA_VISIBLE_DEVICES)."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _NAMES_SCRIPT],
            capture_output=True, text=True, timeout=timeout, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("GPU name not recorded (the environment says 'unknown'): %s", exc)
        return "unknown"
    return done.stdout.strip() or "unknown"


def fingerprint(parts: dict[str, object]) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def capture_environment(cwd: Path | None = None) -> Environment:
    """The Environment record of this process and checkout."""
    import torch

    commit, branch = git_state(cwd)
    cpu = cpu_model()
    gpu = _gpu()
    python = platform.python_version()
    threads = torch.get_num_threads()
    parts: dict[str, object] = {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory": _memory_bytes(),
        "gpu": gpu,
        "os": f"{platform.system()} {platform.machine()}",
        "python": ".".join(python.split(".")[:2]),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": threads,
    }
    return Environment(
        fingerprint=os.environ.get(FINGERPRINT_VARIABLE) or fingerprint(parts),
        git_commit=commit,
        git_branch=branch,
        hostname=socket.gethostname(),
        cpu=f"{cpu} ({os.cpu_count()} logical)",
        gpu=gpu,
        python_version=python,
        torch_version=torch.__version__,
        cuda_version=torch.version.cuda,
        num_threads=threads,
    )
