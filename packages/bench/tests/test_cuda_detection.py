"""Which cases count as CUDA work, decided per case on a CPU with torch.cuda faked.

The environment capture used to ask torch for the GPU name, which initialises CUDA in the
measuring process; every CPU-only case then recorded a CUDA peak of 0 bytes instead of its
peak RSS, and every timing block synchronised the GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from torchsmith.bench import (
    MeasureConfig,
    Registry,
    benchmark,
    capture_environment,
    measure,
    measure_cases,
)
from torchsmith.bench import _environment as environment_module
from torchsmith.bench import _memory as memory_module
from torchsmith.bench._memory import cuda_peak_bytes

FAST = MeasureConfig(warmup_time=0.0, min_block_time=0.001, min_samples=5, max_samples=8,
                     max_time=0.05)  # fmt: skip


class FakeCuda:
    """torch.cuda as seen after something initialised CUDA: counts syncs and allocations."""

    def __init__(self) -> None:
        self.syncs = 0
        self.allocations = 3  # made before the case under test
        self.held = 0  # bytes the case holds on the GPU

    def allocate(self) -> None:
        self.allocations += 1

    def synchronize(self) -> None:
        self.syncs += 1

    def memory_stats(self) -> dict[str, int]:
        return {"allocation.all.allocated": self.allocations}


@pytest.fixture
def cuda(monkeypatch: pytest.MonkeyPatch) -> FakeCuda:
    fake = FakeCuda()

    def get_device_name(*args: Any) -> str:
        raise AssertionError("get_device_name() initialises CUDA in the measuring process")

    fakes: dict[str, Callable[..., Any]] = {
        "is_available": lambda: True,
        "is_initialized": lambda: True,
        "device_count": lambda: 1,
        "get_device_name": get_device_name,
        "synchronize": fake.synchronize,
        "memory_stats": fake.memory_stats,
        "memory_allocated": lambda *args: fake.held,
        "reset_peak_memory_stats": lambda *args: None,
        "max_memory_allocated": lambda *args: 4096,
    }
    for name, value in fakes.items():
        monkeypatch.setattr(torch.cuda, name, value)
    monkeypatch.setattr(environment_module, "_device_names", lambda: "Fake GPU", raising=False)
    return fake


def test_the_environment_capture_names_the_gpu_without_initialising_cuda(cuda: FakeCuda) -> None:
    assert capture_environment().gpu == "Fake GPU"


def test_a_cpu_case_gets_the_cpu_path_although_cuda_is_initialised(
    cuda: FakeCuda, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = {"peak_rss_bytes": 5000, "setup_rss_bytes": 3000}
    monkeypatch.setattr(memory_module, "is_importable", lambda case: True)
    monkeypatch.setattr(memory_module, "child_peak_rss", lambda case, params: report)
    measure(lambda: sum(range(100)), FAST)
    assert cuda.syncs == 0  # no timing block waited for the GPU
    benchmark("cpu_only", registry=registry)(lambda: lambda: sum(range(100)))
    (result,) = measure_cases(["cpu_only"], config=FAST, registry=registry, rounds=1)
    assert result.peak_memory_bytes == 5000  # the child probe's peak RSS, not a CUDA peak
    assert result.extra["rss_growth_bytes"] == 2000


def test_a_case_that_allocates_on_the_gpu_is_synchronised_and_gets_the_cuda_peak(
    cuda: FakeCuda,
) -> None:
    measure(cuda.allocate, FAST)
    assert cuda.syncs > 0
    assert cuda_peak_bytes(cuda.allocate) == 4096


def test_a_case_working_in_place_on_gpu_tensors_from_its_setup_is_synchronised(
    cuda: FakeCuda,
) -> None:
    cuda.held = 1024  # setup's tensors; the call itself allocates nothing
    measure(lambda: None, FAST)
    assert cuda.syncs > 0
    assert cuda_peak_bytes(lambda: None) == 4096


def test_the_gpu_names_come_from_a_child_process() -> None:
    names = environment_module._device_names()
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        assert names == ", ".join(torch.cuda.get_device_name(i) for i in range(count))
    else:
        assert names == "unknown"
