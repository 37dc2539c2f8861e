"""``torchsmith doctor``: this machine's hardware, and which torchsmith features work here.

torchsmith doctor            a table
torchsmith doctor --json     the same as JSON: {"hardware", "best_device", "features"}
torchsmith doctor --probe    also compile a tiny function to prove torch.compile works
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass

import torch

from torchsmith.interfaces import KNOWN_COMMANDS, HardwareInfo, TorchsmithError, installed_commands

from ._device import best_device
from ._hardware import detect_hardware

_GIB = 1024**3


@dataclass(frozen=True)
class Feature:
    name: str
    available: bool
    reason: str


def features(hardware: HardwareInfo) -> list[Feature]:
    """Each torchsmith feature that depends on the machine or on an installed suite."""
    caps, why = hardware.capabilities, hardware.reasons
    cuda = bool(hardware.cuda_devices)
    no_cuda = why.get("tf32", "no CUDA device").split("; ")[-1]
    found = [
        Feature("CUDA tests (requires_cuda, device_move check)", cuda, "" if cuda else no_cuda),
        Feature(
            "bf16 autocast check (requires_bf16)", caps.get("bf16", False), why.get("bf16", "")
        ),
        Feature("torch.compile check", caps.get("compile", False), why.get("compile", "")),
        Feature("TF32 matmuls", caps.get("tf32", False), why.get("tf32", "")),
        Feature("flash-attention SDPA", caps.get("flash_sdpa", False), why.get("flash_sdpa", "")),
        Feature(
            "memory-efficient SDPA",
            caps.get("mem_efficient_sdpa", False),
            why.get("mem_efficient_sdpa", ""),
        ),
        Feature(
            "MPS device",
            hardware.mps_available,
            "" if hardware.mps_available else "not an Apple-silicon build with Metal",
        ),
    ]
    commands = installed_commands()
    for command, package in sorted(KNOWN_COMMANDS.items()):
        present = command in commands
        found.append(
            Feature(
                f"torchsmith {command} ({package})",
                present,
                "" if present else f"not installed: pip install {package}",
            )
        )
    return found


def probe_compile(hardware: HardwareInfo) -> float | None:
    """Compile and run a tiny function; record the outcome in ``hardware``; seconds or None."""
    if not hardware.capabilities.get("compile", False):
        return None
    start = time.perf_counter()
    try:
        compiled = torch.compile(lambda x: torch.sin(x) * 2 + 1)
        ok = bool(torch.allclose(compiled(torch.ones(8)), torch.sin(torch.ones(8)) * 2 + 1))
    except Exception as exc:  # any backend failure means "not usable here"
        hardware.capabilities["compile"] = False
        hardware.reasons["compile"] = f"torch.compile failed on a tiny function: {exc}"[:300]
        return None
    if not ok:
        hardware.capabilities["compile"] = False
        hardware.reasons["compile"] = "torch.compile gave a wrong result on a tiny function"
    return time.perf_counter() - start


def render_table(hardware: HardwareInfo, device: str, found: list[Feature]) -> str:
    memory = f"{hardware.memory_bytes / _GIB:.1f} GiB" if hardware.memory_bytes else "unknown"
    rows = [
        ("CPU", hardware.cpu_model),
        (
            "cores",
            f"{hardware.cpu_cores_physical or '?'} physical, {hardware.cpu_cores_logical} logical",
        ),
        ("memory", memory),
        ("platform", hardware.platform),
        ("python", hardware.python_version),
        (
            "torch",
            f"{hardware.torch_version} (CUDA build: {hardware.torch_cuda_version or 'none'}"
            f", debug: {'yes' if hardware.torch_debug_build else 'no'})",
        ),
        ("best device", device),
    ]
    for cuda in hardware.cuda_devices:
        major, minor = cuda.compute_capability
        rows.append(
            (
                f"cuda:{cuda.index}",
                f"{cuda.name}, "
                f"{cuda.total_memory_bytes / _GIB:.1f} GiB, compute capability {major}.{minor}",
            )
        )
    width = max(len(k) for k, _ in rows)
    lines = ["torchsmith doctor", ""] + [f"  {k:<{width}}  {v}" for k, v in rows]
    lines += ["", "capabilities"]
    for name, ok in hardware.capabilities.items():
        reason = "" if ok else f"  ({hardware.reasons.get(name, 'unavailable')})"
        lines.append(f"  {'yes' if ok else 'no ':<3}  {name}{reason}")
    lines += ["", "features"]
    for feature in found:
        reason = "" if feature.available else f"  ({feature.reason})"
        lines.append(f"  {'yes' if feature.available else 'no ':<3}  {feature.name}{reason}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="torchsmith doctor", description="Hardware and available torchsmith features."
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--probe", action="store_true", help="compile a tiny function to prove torch.compile works"
    )
    args = parser.parse_args(argv)
    hardware = detect_hardware()
    seconds = probe_compile(hardware) if args.probe else None
    try:
        device = str(best_device())
    except TorchsmithError as exc:
        device = f"invalid override: {exc}"
    found = features(hardware)
    if args.json:
        payload = {
            "hardware": hardware.model_dump(mode="json"),
            "best_device": device,
            "features": [asdict(f) for f in found],
            "compile_probe_s": seconds,
        }
        print(json.dumps(payload, indent=2))
    else:
        print(render_table(hardware, device, found))
        if seconds is not None:
            print(f"\ntorch.compile probe: compiled and ran a tiny function in {seconds:.1f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
