"""A FIFO of past embeddings (MoCo's queue, NT-Xent's memory bank)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._base import normalize

__all__ = ["FeatureQueue"]


class FeatureQueue(nn.Module):
    """``size`` unit vectors, filled at random (as MoCo) and overwritten oldest first.

    The feature dimension may be given up front or taken from the first batch;
    a state_dict saved after that loads into a fresh queue either way.
    """

    features: torch.Tensor
    pointer: torch.Tensor

    def __init__(self, size: int, dim: int | None = None) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("features", torch.empty(0, 0))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        # The pointer as a Python int: reading the buffer back each push would sync the device.
        # The buffer is written alongside it (for checkpoints) and read only on load.
        self._start = 0
        if dim is not None:
            self._allocate(dim, torch.device("cpu"), torch.get_default_dtype())

    def _allocate(self, dim: int, device: torch.device, dtype: torch.dtype) -> None:
        self.features = normalize(torch.randn(self.size, dim, device=device, dtype=dtype))

    def get(self, like: torch.Tensor) -> torch.Tensor:
        """The queue (size, dim) as a detached tensor in ``like``'s dtype and device."""
        if self.features.numel() == 0:
            self._allocate(like.shape[1], like.device, like.dtype)
        if self.features.shape[1] != like.shape[1]:
            from torchsmith.interfaces import DataError

            raise DataError(
                f"embeddings have dim {like.shape[1]} but the queue holds dim "
                f"{self.features.shape[1]} (shape {tuple(self.features.shape)})"
            )
        # a copy: push() overwrites the buffer in place while autograd still needs it
        return self.features.detach().to(device=like.device, dtype=like.dtype, copy=True)

    @torch.no_grad()
    def push(self, batch: torch.Tensor) -> None:
        """Overwrite the oldest entries with ``batch`` (n, dim), wrapping around."""
        batch = batch.detach()[-self.size :].to(self.features)
        n, start = batch.shape[0], self._start
        index = (torch.arange(n, device=self.features.device) + start) % self.size
        self.features[index] = batch
        self._start = (start + n) % self.size
        self.pointer.fill_(self._start)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        saved = state_dict.get(prefix + "features")
        if isinstance(saved, torch.Tensor) and saved.shape != self.features.shape:
            self.features = torch.empty_like(saved, device=self.features.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._start = int(self.pointer)
