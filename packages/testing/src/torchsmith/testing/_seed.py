"""Seeding python, numpy (when installed) and torch together, and restoring them after."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator (if numpy is installed) and torch."""
    random.seed(seed)
    np = _numpy()
    if np is not None:
        np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed everything for the ``with`` block, then put the previous RNG states back."""
    py_state = random.getstate()
    np = _numpy()
    np_state = np.random.get_state() if np is not None else None
    torch_state = torch.random.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        seed_everything(seed)
        yield
    finally:
        random.setstate(py_state)
        if np is not None:
            np.random.set_state(np_state)
        torch.random.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        return None
    return numpy
