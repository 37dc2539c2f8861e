"""A weighted sum of named losses; weights fixed or learned by uncertainty weighting.

Uncertainty weighting (Kendall, Gal and Cipolla 2018): each loss i gets a learned
s_i = log sigma_i^2 and the total is ``sum_i 0.5 * exp(-s_i) * L_i + 0.5 * s_i``;
at the optimum s_i = log L_i.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from torchsmith.interfaces import ConfigError

from ._base import LossModule
from ._registry import get_loss, register_loss

__all__ = ["FusionLoss"]

LossSpec = nn.Module | Mapping[str, Any] | None


def _build(name: str, spec: LossSpec) -> nn.Module:
    if isinstance(spec, nn.Module):
        return spec
    if spec is None:
        return get_loss(name)
    if isinstance(spec, Mapping):
        kwargs = dict(spec)
        return get_loss(str(kwargs.pop("name", name)), **kwargs)
    raise ConfigError(
        f"losses[{name!r}] must be a loss module, a dict of its kwargs, or None; got {spec!r}"
    )


@register_loss("fusion")
class FusionLoss(LossModule):
    """``sum_i w_i * L_i`` over named losses.

    ``losses`` maps a name to a module, to a dict of kwargs for ``get_loss`` (the key is
    the registry name unless the dict has ``"name"``), or to None (defaults).
    ``weights`` (default 1 each) are fixed; ``uncertainty=True`` learns them instead
    (add this module's parameters to the optimizer).

    Call with one mapping ``{name: args}`` (a tuple of positional args or a dict of
    keyword args per loss), or with plain arguments given unchanged to every loss.
    Components: each loss's value, and its own components as ``name/component``.
    """

    def __init__(
        self,
        *,
        losses: Mapping[str, LossSpec],
        weights: Mapping[str, float] | None = None,
        uncertainty: bool = False,
    ) -> None:
        super().__init__()
        if not losses:
            raise ConfigError("fusion needs at least one entry in losses")
        self.losses = nn.ModuleDict({name: _build(name, spec) for name, spec in losses.items()})
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(self.losses))
        if unknown:
            raise ConfigError(f"weights name losses that are not in losses: {unknown}")
        if uncertainty and weights:
            raise ConfigError("give either fixed weights or uncertainty=True, not both")
        self.weights = {name: float(weights.get(name, 1.0)) for name in self.losses}
        self.uncertainty = uncertainty
        self.log_vars = nn.Parameter(torch.zeros(len(self.losses))) if uncertainty else None

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        values = {name: self._call(name, loss, args, kwargs) for name, loss in self.losses.items()}
        total: torch.Tensor | None = None
        for i, (name, value) in enumerate(values.items()):
            if self.log_vars is not None:
                s = self.log_vars[i].to(value.dtype)
                term = 0.5 * torch.exp(-s) * value + 0.5 * s
            else:
                term = self.weights[name] * value
            total = term if total is None else total + term
        assert total is not None
        return self._record(total, **self._components(values))

    def _call(
        self, name: str, loss: nn.Module, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> torch.Tensor:
        routed = len(args) == 1 and not kwargs and isinstance(args[0], Mapping)
        if routed and set(args[0]) <= set(self.losses):
            if name not in args[0]:
                raise ConfigError(f"fusion input has no entry for loss {name!r}")
            entry = args[0][name]
            if isinstance(entry, Mapping):
                out = loss(**entry)
            elif isinstance(entry, Sequence):
                out = loss(*entry)
            else:
                out = loss(entry)
        else:
            out = loss(*args, **kwargs)
        if not isinstance(out, torch.Tensor) or out.dim() != 0:
            raise ConfigError(f"loss {name!r} must return a scalar tensor, got {out!r}")
        return out

    def _components(self, values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        parts: dict[str, torch.Tensor] = dict(values)
        for name, loss in self.losses.items():
            for key, value in getattr(loss, "components", {}).items():
                parts[f"{name}/{key}"] = value
        if self.log_vars is not None:
            for i, name in enumerate(self.losses):
                parts[f"weight/{name}"] = 0.5 * torch.exp(-self.log_vars[i])
        return parts
