"""Peak memory of one call: CUDA max allocated in-process, or peak RSS in a child process.

``memory`` modes: ``auto`` (the default) records CUDA max allocated when the work uses CUDA
and otherwise peak RSS from the child probe; ``cuda`` only the CUDA peak (no child process);
``child`` the child probe's peak RSS even for CUDA work; ``off`` nothing. From the probe,
``peak_memory_bytes`` is the peak RSS (interpreter and torch included) and
``extra["rss_growth_bytes"]`` the growth over the RSS after setup, the call's own share.

RSS is a per-process high-water mark, so measuring it in the benchmarking process would
report whatever ran before. The child imports the case afresh, runs setup, resets the mark
(Linux ``clear_refs``; elsewhere the mark keeps the import peak), runs a few calls and
reports the mark (which includes the interpreter and torch themselves) and the RSS after
setup, so the growth due to the timed call is their difference.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import resource
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from torchsmith.interfaces import ConfigError

from ._errors import MemoryProbeError
from ._registry import REGISTRY, Case, Scalar, is_importable, load_file
from ._timer import cuda_allocations, cuda_in_use

logger = logging.getLogger(__name__)

MemoryMode = Literal["auto", "cuda", "child", "off"]
MEMORY_MODES: tuple[MemoryMode, ...] = ("auto", "cuda", "child", "off")
# What later worker rounds record: the probe's peak RSS hardly varies, so round 1's stands.
LATER_ROUNDS: dict[str, MemoryMode] = {"auto": "cuda", "cuda": "cuda", "child": "off", "off": "off"}


def check_mode(mode: str) -> MemoryMode:
    for known in MEMORY_MODES:
        if mode == known:
            return known
    raise ConfigError(f"memory must be one of {', '.join(MEMORY_MODES)}; got {mode!r}")


def peak_memory(
    case: Case, params: Mapping[str, Scalar], fn: Callable[[], object], mode: MemoryMode
) -> tuple[int | None, dict[str, float]]:
    """``(peak_memory_bytes, extra)`` of one call of ``fn`` as ``mode`` asks."""
    if mode == "off":
        return None, {}
    if mode != "child":
        peak = cuda_peak_bytes(fn)
        if peak is not None or mode == "cuda":
            return peak, {}
    if mode == "auto" and not is_importable(case):
        why = "its case cannot be imported in a child (define it in a bench_*.py file or module)"
        logger.warning("peak RSS of %s not measured: %s", case.name, why)
        return None, {}
    try:
        report = child_peak_rss(case, params)
    except MemoryProbeError as exc:
        if mode == "child":
            raise
        logger.warning("peak RSS of %s not measured: %s", case.name, exc)
        return None, {}
    growth = report["peak_rss_bytes"] - report["setup_rss_bytes"]
    return report["peak_rss_bytes"], {"rss_growth_bytes": float(growth)}


def cuda_peak_bytes(fn: Callable[[], object]) -> int | None:
    """CUDA max allocated bytes during one call, or None when the work does not use CUDA."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    if not torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = cuda_allocations()
    fn()
    torch.cuda.synchronize()
    if not cuda_in_use(before):  # CUDA is initialised, but this call allocated nothing there
        return None
    return int(torch.cuda.max_memory_allocated())


def _status_bytes(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (Linux), in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the RSS high-water mark (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _max_rss_bytes() -> int:
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kib) * (1 if sys.platform == "darwin" else 1024)  # macOS reports bytes


def child_peak_rss(
    case: Case, params: Mapping[str, Scalar], timeout: float = 300
) -> dict[str, int]:
    """Run ``case`` with ``params`` in a fresh interpreter: peak RSS after setup and after calls."""
    if not case.source:
        raise MemoryProbeError(f"benchmark {case.name!r} has no importable source")
    request = json.dumps({"source": case.source, "name": case.name, "params": dict(params)})
    try:
        done = subprocess.run(
            [sys.executable, "-m", "torchsmith.bench._memory"],
            input=request,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise MemoryProbeError(f"peak RSS probe of {case.name!r} timed out") from exc
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise MemoryProbeError(f"peak RSS probe of {case.name!r} failed: {tail[0]}")
    try:
        report: dict[str, int] = json.loads(done.stdout)
    except ValueError as exc:  # the child writes its report alone on stdout (see below)
        raise MemoryProbeError(f"peak RSS probe of {case.name!r} gave no report") from exc
    return report


def _probe(request: Mapping[str, object]) -> dict[str, int]:
    source = str(request["source"])
    if source.endswith(".py") and Path(source).is_file():
        load_file(Path(source))
    else:
        importlib.import_module(source)
    case = REGISTRY.get(str(request["name"]))
    params = request.get("params") or {}
    assert isinstance(params, dict)
    fn = case.setup(**params)
    # Forget the peak of imports and setup where the kernel allows it, so the mark that
    # follows is the timed call's own.
    after_setup = _status_bytes("VmRSS") if _reset_peak_rss() else None
    after_setup = after_setup if after_setup is not None else _max_rss_bytes()
    for _ in range(3):
        fn()
    return {"setup_rss_bytes": after_setup, "peak_rss_bytes": _max_rss_bytes()}


def _report_alone(request: Mapping[str, object]) -> None:
    """Probe, with what the case prints (Python's or a C library's writes to fd 1) sent to
    stderr: stdout carries the report and nothing else."""
    report_fd = os.dup(1)
    sys.stdout.flush()
    os.dup2(2, 1)
    report = json.dumps(_probe(request))
    sys.stdout.flush()
    with os.fdopen(report_fd, "w") as out:
        out.write(report)


if __name__ == "__main__":
    _report_alone(json.loads(sys.stdin.read()))
