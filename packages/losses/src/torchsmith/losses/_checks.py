"""Input validation shared by every loss: errors name the argument and the shapes received."""

from __future__ import annotations

import math
import os
import sys
import warnings
from types import FrameType

import torch
from torch import nn

from torchsmith.interfaces import ConfigError, DataError

__all__ = [
    "check_chunk_size",
    "check_embeddings",
    "check_labels",
    "check_pair",
    "check_positive",
    "warn_caller",
]


def check_positive(name: str, value: float) -> float:
    """``value`` as a float, or a ConfigError when it is not a finite number > 0."""
    try:
        value = float(value)
    except (TypeError, ValueError):  # None, a string: not a number at all
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def check_embeddings(name: str, x: object) -> torch.Tensor:
    """``x`` must be a 2-D floating tensor (batch, dim) with at least one row."""
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{name} must be a torch.Tensor of shape (batch, dim), got {type(x)}")
    if x.dim() != 2:
        raise DataError(f"{name} must have shape (batch, dim), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise DataError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{name} is empty: shape {tuple(x.shape)}")
    return x


def check_pair(name_a: str, a: object, name_b: str, b: object) -> None:
    """Two embedding batches that must match in batch size and feature dimension."""
    ta = check_embeddings(name_a, a)
    tb = check_embeddings(name_b, b)
    if ta.shape != tb.shape:
        raise DataError(
            f"{name_a} and {name_b} must have the same shape (batch, dim), got "
            f"{name_a} {tuple(ta.shape)} and {name_b} {tuple(tb.shape)}"
        )


def check_labels(name: str, labels: object, batch: int) -> torch.Tensor:
    """Integer class labels of shape (batch,)."""
    if not isinstance(labels, torch.Tensor):
        raise DataError(f"{name} must be a torch.Tensor of shape ({batch},), got {type(labels)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise DataError(f"{name} must be an integer tensor, got dtype {labels.dtype}")
    if tuple(labels.shape) != (batch,):
        raise DataError(
            f"{name} must have shape ({batch},) to match the embeddings, "
            f"got shape {tuple(labels.shape)}"
        )
    return labels


def check_chunk_size(chunk_size: int | None) -> int | None:
    """None (dense) or a positive int number of rows per block."""
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ConfigError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    return chunk_size


_INSIDE = (os.path.dirname(__file__), os.path.dirname(nn.__file__))


def warn_caller(message: str) -> None:
    """A RuntimeWarning attributed to the line that called the loss: the first frame
    outside this package and torch.nn (a loss is called through ``Module.__call__``), so
    that it shows the user's line and a filter by module works."""
    frame: FrameType | None = sys._getframe(1)
    level = 2  # the stacklevel that names warn_caller's caller, frame
    while frame is not None and frame.f_code.co_filename.startswith(_INSIDE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, RuntimeWarning, stacklevel=level)
