"""Seeding, and capturing every RNG as tensors and ints that ``weights_only`` loading accepts."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def python_and_numpy_kept() -> Iterator[None]:
    """Python's and NumPy's global generators as they were, on the way out: what
    ``torch.random.fork_rng`` does for torch's, for the code a dataset or a metric runs."""
    python, numpy = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)


def rng_state() -> dict[str, Any]:
    """The state of python's, numpy's and torch's CPU generator, and this process's GPU's.

    One GPU a process (its ``LOCAL_RANK`` under DDP): a run resumed where fewer GPUs are
    visible must still find the state it needs, which a list indexed by GPU would not.
    """
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()  # the current device's
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        # Older checkpoints held every GPU's state as a list; this process uses the current one.
        current = torch.cuda.current_device()
        if isinstance(cuda, (list, tuple)):
            cuda = cuda[current] if current < len(cuda) else cuda[0]
        torch.cuda.set_rng_state(cuda)
