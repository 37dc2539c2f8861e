"""detect_hardware() against what the OS and torch report directly."""

from __future__ import annotations

import os
import platform

import pytest
import torch

from torchsmith.interfaces import HardwareInfo
from torchsmith.testing import CAPABILITIES, detect_hardware
from torchsmith.testing import _hardware as hw

CPUINFO = """processor\t: 0
model name\t: Example CPU 9000
physical id\t: 0
core id\t\t: 0

processor\t: 1
model name\t: Example CPU 9000
physical id\t: 0
core id\t\t: 0

processor\t: 2
model name\t: Example CPU 9000
physical id\t: 1
core id\t\t: 0
"""


def test_fields_match_the_os_and_torch() -> None:
    info = detect_hardware()
    assert info.cpu_cores_logical == os.cpu_count()
    assert info.python_version == platform.python_version()
    assert info.torch_version == torch.__version__
    assert info.torch_cuda_version == torch.version.cuda
    assert len(info.cuda_devices) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert info.memory_bytes is None or info.memory_bytes > 2**26


def test_every_capability_is_decided_and_each_missing_one_says_why() -> None:
    info = detect_hardware()
    assert set(info.capabilities) == set(CAPABILITIES)
    missing = {name for name, ok in info.capabilities.items() if not ok}
    assert set(info.reasons) == missing
    assert all(len(reason) > 10 for reason in info.reasons.values())


def test_round_trips_through_the_interfaces_schema() -> None:
    info = detect_hardware()
    assert HardwareInfo.read(info.write()) == info


def test_physical_cores_count_distinct_package_core_pairs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hw, "_cpuinfo", lambda: hw._parse_cpuinfo(CPUINFO))
    assert hw._physical_cores() == 2  # two hyperthreads of core 0 on package 0, one on 1
    assert hw._cpu_model() == "Example CPU 9000"


def test_without_cuda_the_cuda_capabilities_name_the_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.version, "cuda", None)
    capabilities, reasons = hw._capabilities([])
    assert capabilities["tf32"] is False and capabilities["flash_sdpa"] is False
    assert "CPU-only build" in reasons["tf32"]


def test_an_old_gpu_lacks_tf32_with_its_compute_capability() -> None:
    from torchsmith.interfaces import CudaDevice

    turing = CudaDevice(
        index=0, name="T4", total_memory_bytes=16 * 2**30, compute_capability=(7, 5)
    )
    reason = hw._tf32([turing])
    assert reason is not None and "T4 has compute capability 7.5" in reason
    ampere = turing.model_copy(update={"compute_capability": (8, 0)})
    assert hw._tf32([ampere]) is None


def test_compile_needs_a_cxx_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hw, "_cxx_compiler", lambda: None)
    reason = hw._compile([])
    assert reason is not None and "C++ compiler" in reason


class FakeProps:
    def __init__(self, name: str, memory: int, major: int, minor: int) -> None:
        self.name, self.total_memory, self.major, self.minor = name, memory, major, minor


def test_cuda_devices_and_capabilities_on_a_faked_ampere_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    props = [FakeProps("A100", 40 * 2**30, 8, 0), FakeProps("T4", 16 * 2**30, 7, 5)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props[i])
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.backends.cuda, "is_flash_attention_available", lambda: True)
    monkeypatch.setattr(hw, "_compile", lambda cuda: None)
    info = detect_hardware()
    assert [(d.index, d.name, d.compute_capability) for d in info.cuda_devices] == [
        (0, "A100", (8, 0)),
        (1, "T4", (7, 5)),
    ]
    assert info.cuda_devices[0].total_memory_bytes == 40 * 2**30
    assert info.capabilities == dict.fromkeys(CAPABILITIES, True) | {
        "mem_efficient_sdpa": torch.backends.cuda.mem_efficient_sdp_enabled()
    }


def test_flash_needs_ampere_and_bf16_support_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from torchsmith.interfaces import CudaDevice

    monkeypatch.setattr(torch.backends.cuda, "is_flash_attention_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    t4 = CudaDevice(index=0, name="T4", total_memory_bytes=2**34, compute_capability=(7, 5))
    flash = hw._flash_sdpa([t4])
    assert flash is not None and "flash SDPA needs 8.0 or newer" in flash
    bf16 = hw._bf16([t4])
    assert bf16 is not None and "T4 (compute capability 7.5) has no bf16 support" in bf16


def test_compile_on_cuda_needs_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchsmith.interfaces import CudaDevice

    gpu = CudaDevice(index=0, name="A100", total_memory_bytes=2**35, compute_capability=(8, 0))
    monkeypatch.setattr(hw.importlib.util, "find_spec", lambda name: None)
    reason = hw._compile([gpu])
    assert reason is not None and "pip install triton" in reason
