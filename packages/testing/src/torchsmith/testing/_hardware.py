"""What this machine offers: CPU, memory, the torch build, accelerators and capabilities.

``detect_hardware()`` is cheap (no compilation, no kernel benchmarks): every capability is
decided from the torch build and the devices it sees, and each one that is unavailable gets
a reason in ``HardwareInfo.reasons`` saying why.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import sys
from functools import lru_cache
from pathlib import Path

import torch

from torchsmith.interfaces import CudaDevice, HardwareInfo

CAPABILITIES = ("bf16", "tf32", "flash_sdpa", "mem_efficient_sdpa", "compile")

# Flash attention and TF32 tensor cores arrived with Ampere (compute capability 8.0).
_AMPERE = (8, 0)


def detect_hardware() -> HardwareInfo:
    """Describe this machine: CPU, memory, torch build, CUDA devices, MPS and capabilities."""
    cuda_devices = _cuda_devices()
    capabilities, reasons = _capabilities(cuda_devices)
    return HardwareInfo(
        cpu_model=_cpu_model(),
        cpu_cores_physical=_physical_cores(),
        cpu_cores_logical=os.cpu_count() or 1,
        memory_bytes=_memory_bytes(),
        platform=platform.platform(),
        python_version=platform.python_version(),
        torch_version=torch.__version__,
        torch_cuda_version=torch.version.cuda,
        torch_debug_build=bool(torch.version.debug),
        cuda_devices=cuda_devices,
        mps_available=_mps_available(),
        capabilities=capabilities,
        reasons=reasons,
    )


@lru_cache(maxsize=1)
def cached_hardware() -> HardwareInfo:
    """detect_hardware(), computed once per process (the plugin asks for it per test)."""
    return detect_hardware()


# ---------------------------------------------------------------- CPU and memory


def _cpuinfo() -> list[dict[str, str]]:
    """/proc/cpuinfo as one dict per logical processor; [] where it does not exist."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return _parse_cpuinfo(text)


def _parse_cpuinfo(text: str) -> list[dict[str, str]]:
    blocks = []
    for block in text.strip().split("\n\n"):
        fields = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        blocks.append(fields)
    return blocks


def _cpu_model() -> str:
    for fields in _cpuinfo():
        for key in ("model name", "Model", "Hardware", "cpu model"):
            if fields.get(key):
                return fields[key]
    return platform.processor() or platform.machine() or "unknown"


def _physical_cores() -> int | None:
    """Distinct (package, core) pairs in /proc/cpuinfo; None where they cannot be read."""
    cores = {
        (fields.get("physical id", "0"), fields["core id"])
        for fields in _cpuinfo()
        if "core id" in fields
    }
    return len(cores) or None


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


# ---------------------------------------------------------------- accelerators


def _cuda_devices() -> list[CudaDevice]:
    if not torch.cuda.is_available():
        return []
    devices = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        devices.append(
            CudaDevice(
                index=index,
                name=props.name,
                total_memory_bytes=props.total_memory,
                compute_capability=(props.major, props.minor),
            )
        )
    return devices


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _no_cuda_reason() -> str:
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    return f"torch is built with CUDA {torch.version.cuda} but no CUDA device is visible"


# ---------------------------------------------------------------- capabilities


def _capabilities(cuda: list[CudaDevice]) -> tuple[dict[str, bool], dict[str, str]]:
    found = {
        "bf16": _bf16(cuda),
        "tf32": _tf32(cuda),
        "flash_sdpa": _flash_sdpa(cuda),
        "mem_efficient_sdpa": _mem_efficient_sdpa(cuda),
        "compile": _compile(cuda),
    }
    capabilities = {name: reason is None for name, reason in found.items()}
    reasons = {name: reason for name, reason in found.items() if reason is not None}
    return capabilities, reasons


def _bf16(cuda: list[CudaDevice]) -> str | None:
    """None when bf16 works on the best device, else why not."""
    if cuda:
        if torch.cuda.is_bf16_supported():
            return None
        return f"{cuda[0].name} (compute capability {_cc(cuda[0])}) has no bf16 support"
    try:
        a = torch.ones(2, 2, dtype=torch.bfloat16)
        ok = bool(torch.isfinite(a @ a).all())
    except RuntimeError as exc:
        return f"bf16 matmul fails on CPU: {exc}"
    return None if ok else "bf16 matmul on CPU gave non-finite values"


def _tf32(cuda: list[CudaDevice]) -> str | None:
    if not cuda:
        return f"TF32 is a CUDA tensor-core format; {_no_cuda_reason()}"
    best = max(cuda, key=lambda d: d.compute_capability)
    if best.compute_capability < _AMPERE:
        return f"{best.name} has compute capability {_cc(best)}; TF32 needs 8.0 (Ampere) or newer"
    return None


def _flash_sdpa(cuda: list[CudaDevice]) -> str | None:
    if not cuda:
        return f"the flash SDPA kernel is CUDA-only; {_no_cuda_reason()}"
    if not torch.backends.cuda.is_flash_attention_available():
        return f"torch {torch.__version__} was built without flash attention"
    best = max(cuda, key=lambda d: d.compute_capability)
    if best.compute_capability < _AMPERE:
        return f"{best.name} has compute capability {_cc(best)}; flash SDPA needs 8.0 or newer"
    return None


def _mem_efficient_sdpa(cuda: list[CudaDevice]) -> str | None:
    if not cuda:
        return f"the memory-efficient SDPA kernel is CUDA-only; {_no_cuda_reason()}"
    if not torch.backends.cuda.mem_efficient_sdp_enabled():  # type: ignore[no-untyped-call]
        return "the memory-efficient SDPA backend is disabled in this process"
    return None


def _compile(cuda: list[CudaDevice]) -> str | None:
    """Whether torch.compile's default backend (inductor) can build kernels here."""
    dynamo = getattr(torch, "_dynamo", None)
    supported = getattr(dynamo, "is_dynamo_supported", None)
    if supported is not None and not supported():
        return f"TorchDynamo does not support Python {platform.python_version()} on {sys.platform}"
    if cuda and importlib.util.find_spec("triton") is None:
        return "inductor needs triton for CUDA kernels; pip install triton"
    compiler = _cxx_compiler()
    if compiler is None:
        return "inductor needs a C++ compiler for CPU kernels (g++ or clang++); none is on PATH"
    return None


def _cxx_compiler() -> str | None:
    wanted = os.environ.get("CXX")
    candidates = [wanted] if wanted else []
    candidates += ["g++", "clang++", "c++"]
    for name in candidates:
        path = shutil.which(name)
        if path:
            return path
    return None


def _cc(device: CudaDevice) -> str:
    major, minor = device.compute_capability
    return f"{major}.{minor}"
