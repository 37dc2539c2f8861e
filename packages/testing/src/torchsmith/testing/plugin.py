"""The pytest plugin (entry point ``pytest11: torchsmith``): markers, fixtures and the report.

Markers: ``requires_cuda``, ``requires_gpu_memory(gb)``, ``requires_bf16``, ``slow`` (skipped
unless ``--run-slow`` or TORCHSMITH_RUN_SLOW=1) and ``perf``; an unmet requirement skips the
test with a reason naming what is missing.
Fixtures: ``device``, ``rng``, ``tmp_checkpoint_dir``, ``hardware``.
Option ``--torchsmith-report=PATH`` writes a JSON report (and PATH with .md) of the
ModelTest/LossTest checks per model and device.

pytest loads this module in every run where the package is installed, so it imports torch
only inside the hooks and fixtures that need it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import torch

    from torchsmith.interfaces import HardwareInfo

MARKERS = (
    "requires_cuda: needs a CUDA device; skipped with a reason otherwise",
    "requires_gpu_memory(gb): needs a CUDA device with at least gb GiB of memory",
    "requires_bf16: needs bfloat16 support on the test device",
    "slow: takes more than a few seconds; run with --run-slow",
    "perf: a performance comparison (tests/performance)",
)
RUN_SLOW_ENV = "TORCHSMITH_RUN_SLOW"
_GIB = 1024**3


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("torchsmith", "torchsmith model testing")
    # An entry-point plugin is registered before any conftest, so this always runs first; a
    # conftest that defines the option too must suppress the clash itself (see README).
    with contextlib.suppress(ValueError):  # another plugin defining it first
        group.addoption("--run-slow", action="store_true", help="run tests marked slow")
    group.addoption(
        "--torchsmith-report",
        metavar="PATH",
        default=None,
        help="write the ModelTest/LossTest check report as JSON to PATH (and markdown to .md)",
    )
    group.addoption(
        "--torchsmith-seed", type=int, default=0, help="seed of the rng fixture (default 0)"
    )


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    path = config.getoption("--torchsmith-report", None)
    if path:
        from ._report_collector import ReportCollector

        config.pluginmanager.register(ReportCollector(Path(path)), "torchsmith-report")


def pytest_runtest_setup(item: pytest.Item) -> None:
    reason = unmet_requirement(item)
    if reason is not None:
        pytest.skip(reason)


def unmet_requirement(item: pytest.Item) -> str | None:
    """Why ``item`` cannot run here (its first unmet marker), or None."""
    if item.get_closest_marker("slow") and not _run_slow(item.config):
        return f"slow test: pass --run-slow (or set {RUN_SLOW_ENV}=1) to run it"
    if item.get_closest_marker("requires_cuda") and not _cuda_available():
        return f"requires CUDA: {_why_no_cuda()}"
    memory = item.get_closest_marker("requires_gpu_memory")
    if memory is not None:
        reason = _gpu_memory_reason(memory)
        if reason is not None:
            return reason
    if item.get_closest_marker("requires_bf16"):
        from ._hardware import cached_hardware

        hardware = cached_hardware()
        if not hardware.capabilities.get("bf16", False):
            return f"requires bf16: {hardware.reasons.get('bf16', 'unsupported')}"
    return None


def _run_slow(config: pytest.Config) -> bool:
    return bool(config.getoption("--run-slow", False)) or os.environ.get(RUN_SLOW_ENV) == "1"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _why_no_cuda() -> str:
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    return f"torch {torch.__version__} is built with CUDA {torch.version.cuda} but sees no device"


def _gpu_memory_reason(marker: pytest.Mark) -> str | None:
    gb = marker.args[0] if marker.args else marker.kwargs.get("gb")
    if not isinstance(gb, int | float) or gb <= 0:
        raise pytest.UsageError(
            f"requires_gpu_memory needs a positive number of GiB, e.g. "
            f"@pytest.mark.requires_gpu_memory(16); got {marker.args or marker.kwargs}"
        )
    if not _cuda_available():
        return f"requires a GPU with {gb:g} GiB of memory: {_why_no_cuda()}"
    import torch

    largest = max(
        (torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())),
        key=lambda p: p.total_memory,
    )
    if largest.total_memory < gb * _GIB:
        return (
            f"requires a GPU with {gb:g} GiB of memory; the largest here, {largest.name}, "
            f"has {largest.total_memory / _GIB:.1f} GiB"
        )
    return None


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def device() -> torch.device:
    """The device to test on: best_device() (TORCHSMITH_DEVICE, else cuda, mps, cpu)."""
    from ._device import best_device

    return best_device()


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> Iterator[torch.Generator]:
    """Seeds python, numpy and torch for the test (restored after); yields a seeded Generator."""
    import torch

    from ._seed import seeded

    seed = int(request.config.getoption("--torchsmith-seed", 0))
    with seeded(seed):
        yield torch.Generator().manual_seed(seed)


@pytest.fixture
def tmp_checkpoint_dir(tmp_path: Path) -> Path:
    """An empty directory for checkpoints, removed with the test's tmp_path."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    return folder


@pytest.fixture(scope="session")
def hardware() -> HardwareInfo:
    """This machine's HardwareInfo, detected once per session."""
    from ._hardware import cached_hardware

    return cached_hardware()
