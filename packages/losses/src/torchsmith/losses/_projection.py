"""Projection heads: the small MLPs between an encoder and a self-supervised loss.

One module (:class:`ProjectionHead`) covers every published layout: a list of layer
sizes, each hidden layer ``Linear -> BatchNorm1d -> activation``, the last one
``Linear`` with an optional BatchNorm (SimCLR's official code). A Linear followed by
a BatchNorm has no bias: the norm's shift takes its place. The builder functions only
pick the sizes and options each paper (and its official code) uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise

import torch
from torch import nn

__all__ = [
    "ProjectionHead",
    "barlow_twins_projector",
    "byol_projection_head",
    "clip_projection",
    "moco_v2_projection_head",
    "simclr_projection_head",
    "vicreg_expander",
]

Activation = str | Callable[[], nn.Module]

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


def _config_error(message: str) -> Exception:
    from torchsmith.interfaces import ConfigError

    return ConfigError(message)


def _check_dims(dims: Sequence[int]) -> list[int]:
    sizes = list(dims) if isinstance(dims, Sequence) and not isinstance(dims, str) else None
    if sizes is None or len(sizes) < 2:
        raise _config_error(
            f"dims must list at least two sizes [in_dim, ..., out_dim], got {dims!r}"
        )
    for i, size in enumerate(sizes):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise _config_error(f"dims[{i}] must be a positive int, got {size!r} in {sizes}")
    return sizes


def _check_size(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _config_error(f"{name} must be a positive int, got {value!r}")
    return value


def _activation(activation: Activation) -> Callable[[], nn.Module]:
    if callable(activation):
        return activation
    if activation in _ACTIVATIONS:
        return _ACTIVATIONS[activation]
    raise _config_error(
        f"activation must be one of {sorted(_ACTIVATIONS)} or a callable returning an "
        f"nn.Module, got {activation!r}"
    )


class ProjectionHead(nn.Module):
    """An MLP head over the sizes ``dims = [in_dim, hidden..., out_dim]``.

    Each hidden layer is ``Linear -> BatchNorm1d -> activation`` (no BatchNorm when
    ``batch_norm=False``); the last layer is ``Linear``, followed by a BatchNorm when
    ``last_batch_norm=True``. A Linear's bias defaults to "no BatchNorm follows it";
    ``last_bias`` overrides it for the last layer (Barlow Twins and VICReg use none).
    The layers live in ``self.layers`` (an ``nn.Sequential``) in that order.
    """

    def __init__(
        self,
        dims: Sequence[int],
        *,
        batch_norm: bool = True,
        last_batch_norm: bool = False,
        activation: Activation = "relu",
        last_bias: bool | None = None,
    ) -> None:
        super().__init__()
        sizes = _check_dims(dims)
        make_activation = _activation(activation)
        layers: list[nn.Module] = []
        for d_in, d_out in pairwise(sizes[:-1]):
            layers.append(nn.Linear(d_in, d_out, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(d_out))
            layers.append(make_activation())
        bias = not last_batch_norm if last_bias is None else last_bias
        layers.append(nn.Linear(sizes[-2], sizes[-1], bias=bias))
        if last_batch_norm:
            layers.append(nn.BatchNorm1d(sizes[-1]))
        self.dims = tuple(sizes)
        self.layers = nn.Sequential(*layers)

    @property
    def in_dim(self) -> int:
        return self.dims[0]

    @property
    def out_dim(self) -> int:
        return self.dims[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, in_dim) -> (batch, out_dim)."""
        if x.dim() != 2 or x.shape[-1] != self.in_dim:
            from torchsmith.interfaces import DataError

            raise DataError(
                f"ProjectionHead expects input of shape (batch, {self.in_dim}), "
                f"got shape {tuple(x.shape)}"
            )
        out: torch.Tensor = self.layers(x)
        return out


def simclr_projection_head(
    in_dim: int,
    hidden_dim: int = 2048,
    out_dim: int = 128,
    *,
    num_layers: int = 2,
    batch_norm: bool = True,
) -> ProjectionHead:
    """SimCLR: ``W2 relu(W1 h)`` (v1, ``num_layers=2``); v2 uses 3 layers.

    As in the official code, every layer, the last included, has a BatchNorm
    (``batch_norm=False`` drops them all and gives the Linear layers biases).
    """
    _check_size("num_layers", num_layers)
    if num_layers < 2:
        raise _config_error(f"num_layers must be >= 2 for SimCLR, got {num_layers}")
    dims = [_check_size("in_dim", in_dim)]
    dims += [_check_size("hidden_dim", hidden_dim)] * (num_layers - 1)
    dims += [_check_size("out_dim", out_dim)]
    return ProjectionHead(dims, batch_norm=batch_norm, last_batch_norm=batch_norm)


def moco_v2_projection_head(
    in_dim: int, hidden_dim: int = 2048, out_dim: int = 128
) -> ProjectionHead:
    """MoCo v2: a 2-layer MLP, hidden 2048 with ReLU, no BatchNorm, output 128."""
    dims = [_check_size(n, v) for n, v in (("in_dim", in_dim), ("hidden_dim", hidden_dim))]
    return ProjectionHead([*dims, _check_size("out_dim", out_dim)], batch_norm=False)


def byol_projection_head(in_dim: int, hidden_dim: int = 4096, out_dim: int = 256) -> ProjectionHead:
    """BYOL: Linear(4096) -> BatchNorm -> ReLU -> Linear(256); also BYOL's predictor
    (with ``in_dim=256``)."""
    dims = [_check_size(n, v) for n, v in (("in_dim", in_dim), ("hidden_dim", hidden_dim))]
    return ProjectionHead([*dims, _check_size("out_dim", out_dim)])


def _expander(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> ProjectionHead:
    if _check_size("num_layers", num_layers) < 2:
        raise _config_error(f"num_layers must be >= 2, got {num_layers}")
    dims = [_check_size("in_dim", in_dim)]
    dims += [_check_size("hidden_dim", hidden_dim)] * (num_layers - 1)
    dims += [_check_size("out_dim", out_dim)]
    return ProjectionHead(dims, last_bias=False)


def barlow_twins_projector(
    in_dim: int, hidden_dim: int = 8192, out_dim: int = 8192, *, num_layers: int = 3
) -> ProjectionHead:
    """Barlow Twins: three Linear layers of 8192 units, BatchNorm + ReLU after the first
    two; the last Linear has no bias (official code)."""
    return _expander(in_dim, hidden_dim, out_dim, num_layers)


def vicreg_expander(
    in_dim: int, hidden_dim: int = 8192, out_dim: int = 8192, *, num_layers: int = 3
) -> ProjectionHead:
    """VICReg's expander: the Barlow Twins layout (8192-8192-8192, BatchNorm + ReLU
    after the first two Linear layers, no bias on the last)."""
    return _expander(in_dim, hidden_dim, out_dim, num_layers)


def clip_projection(in_dim: int, out_dim: int) -> ProjectionHead:
    """CLIP: one linear map to the joint space, no bias, no activation
    (``x @ W`` with ``W`` of shape (in_dim, out_dim) is ``weight = W.T`` here)."""
    dims = [_check_size("in_dim", in_dim), _check_size("out_dim", out_dim)]
    return ProjectionHead(dims, batch_norm=False, last_bias=False)
