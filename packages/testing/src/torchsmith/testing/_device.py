"""Choosing the device tests and tools run on.

Order (the first that applies wins):

1. ``TORCHSMITH_DEVICE`` from the environment, e.g. ``cpu``, ``cuda``, ``cuda:1``, ``mps``;
   it must name a device that exists here, or a ConfigError says which and why;
2. ``cuda:0`` when torch sees a CUDA device;
3. ``mps`` when Apple's Metal backend is available;
4. ``cpu``.
"""

from __future__ import annotations

import os

import torch

from torchsmith.interfaces import ConfigError

DEVICE_ENV = "TORCHSMITH_DEVICE"


def best_device() -> torch.device:
    """The device to run on: TORCHSMITH_DEVICE if set, else cuda:0, else mps, else cpu."""
    override = os.environ.get(DEVICE_ENV, "").strip()
    if override:
        return _checked(override)
    if torch.cuda.is_available():
        return torch.device("cuda", 0)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _checked(text: str) -> torch.device:
    try:
        device = torch.device(text)
    except RuntimeError as exc:
        raise ConfigError(
            f"{DEVICE_ENV}={text!r} is not a torch device ({exc}); use cpu, cuda, cuda:N or mps"
        ) from None
    why_not = device_unavailable_reason(device)
    if why_not is not None:
        raise ConfigError(f"{DEVICE_ENV}={text!r} cannot be used: {why_not}; unset it or fix it")
    return device


def device_unavailable_reason(device: torch.device) -> str | None:
    """None when ``device`` can be used in this process, else a sentence saying why not."""
    if device.type == "cpu":
        return None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "torch sees no CUDA device"
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            return f"there is no cuda:{device.index}; torch sees {count} CUDA device(s)"
        return None
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        return None if mps is not None and mps.is_available() else "MPS is not available"
    return f"device type {device.type!r} is not supported by torchsmith.testing"
