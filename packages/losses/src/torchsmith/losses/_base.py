"""What every loss shares: the last value and components, normalisation, temperature.

One small base class (:class:`LossModule`) records the scalar a forward returned and its
named components, detached, so a trainer can log them without recomputing anything.
Temperature is a composed module (:class:`LogitScale`), not a mixin.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from ._checks import check_positive

if TYPE_CHECKING:
    from torchsmith.interfaces import LossOutput

__all__ = ["LogitScale", "LossModule", "compute_dtype", "normalize"]


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype a loss computes in: float32 for half inputs, else the inputs' own.

    Half precision has too little range for logits divided by a small temperature and
    for the epsilons of a norm, so fp16/bf16 inputs are upcast (gradients flow back in
    the input dtype).
    """
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        if t.dtype is not dtype:
            dtype = torch.promote_types(dtype, t.dtype)
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def normalize(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``x / ||x||`` along ``dim``; a row of norm at most 1e-12 (or the dtype's smallest
    normal number, if larger) stays zero, with a zero gradient.

    ``F.normalize`` divides by ``max(||x||, 1e-12)``: 1e-12 is 0 in fp16, so a zero row
    became NaN, and elsewhere the zero row's gradient is 1e12 times the upstream one,
    which overflows to inf once cast back to a half-precision input.
    """
    eps = max(1e-12, torch.finfo(x.dtype).tiny)
    norm = x.norm(dim=dim, keepdim=True)
    kept = norm > eps
    # Both wheres: the unselected branch must hold no inf, or 0 * inf = NaN flows back.
    unit: torch.Tensor = torch.where(kept, x / torch.where(kept, norm, 1.0), 0.0)
    return unit


class _CappedLogScale(torch.autograd.Function):
    """``min(log_scale, cap)``, whose gradient above the cap is kept only where a descent
    step would bring the parameter back under it (a positive gradient): as if the parameter
    were clamped after each step, as open_clip does, rather than stuck where ``clamp``
    passes no gradient at all."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, log_scale: torch.Tensor, cap: float
    ) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(log_scale > cap)
        return log_scale.clamp(max=cap)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (above,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return torch.where(above & (grad < 0), 0.0, grad), None


class LogitScale(nn.Module):
    """``1 / temperature``, fixed or learnable as a clamped log-scale (CLIP's parametrisation).

    Fixed: a Python float, materialised in the inputs' dtype at each call (so fp64 stays
    exact). Learnable: the parameter is ``log(1/temperature)`` and the scale is
    ``exp(min(log_scale, log(max_scale)))``; add the loss's parameters to the optimizer.
    """

    def __init__(
        self, temperature: float, *, learnable: bool = False, max_scale: float = 100.0
    ) -> None:
        super().__init__()
        temperature = check_positive("temperature", temperature)
        self.max_log_scale = math.log(check_positive("max_logit_scale", max_scale))
        self.learnable = learnable
        self.fixed_scale = 1.0 / temperature
        self.log_scale = (
            nn.Parameter(torch.tensor(math.log(self.fixed_scale))) if learnable else None
        )

    def forward(self, like: torch.Tensor) -> torch.Tensor:
        """The scale as a 0-d tensor in ``like``'s dtype and device."""
        if self.log_scale is None:
            return torch.full((), self.fixed_scale, dtype=like.dtype, device=like.device)
        capped: torch.Tensor = _CappedLogScale.apply(self.log_scale, self.max_log_scale)  # type: ignore[no-untyped-call]
        return capped.exp().to(like.dtype)

    @property
    def temperature(self) -> float:
        if self.log_scale is None:
            return 1.0 / self.fixed_scale
        return 1.0 / math.exp(min(float(self.log_scale), self.max_log_scale))

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:.4g}, learnable={self.learnable}"


class LossModule(nn.Module):
    """Base of every torchsmith loss: forward returns a scalar and records its parts.

    After a forward, ``last_loss`` and ``components`` hold detached tensors (no host
    sync); :meth:`loss_output` turns them into a :class:`~torchsmith.interfaces.LossOutput`
    of floats for logging.

    ``projection``: an optional module (e.g. a :class:`ProjectionHead`) owned by the loss
    and applied to the embeddings before the loss by the losses that take it (those where
    one head is shared by every view: ntxent, supcon, vicreg, barlow_twins). Its
    parameters are the loss's: give ``loss.parameters()`` to the optimizer.
    """

    def __init__(self, *, projection: nn.Module | None = None) -> None:
        super().__init__()
        if projection is not None and not isinstance(projection, nn.Module):
            from torchsmith.interfaces import ConfigError

            raise ConfigError(
                f"projection must be an nn.Module or None, got {type(projection).__name__}"
            )
        self.projection = projection
        # Mutated in place by _record: nn.Module.__setattr__ costs ~30 us a call.
        self.components: dict[str, torch.Tensor] = {}
        self._last: list[torch.Tensor] = []

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` through the loss's projection head, if it has one."""
        if self.projection is None:
            return x
        out: torch.Tensor = self.projection(x)
        return out

    @property
    def last_loss(self) -> torch.Tensor | None:
        """The last forward's value, detached; None before the first forward."""
        return self._last[0] if self._last else None

    def _record(self, loss: torch.Tensor, **components: torch.Tensor) -> torch.Tensor:
        self._last[:] = [loss.detach()]
        self.components.clear()
        for name, value in components.items():
            self.components[name] = value.detach()
        return loss

    def loss_output(self) -> LossOutput:
        """The last forward's value and components as floats (one host sync)."""
        from torchsmith.interfaces import ConfigError, LossOutput

        last = self.last_loss
        if last is None:
            raise ConfigError(f"{type(self).__name__}.loss_output() called before any forward")
        names = list(self.components)
        values = torch.stack(
            [last.float().reshape(())]
            + [self.components[n].float().reshape(()).to(last.device) for n in names]
        ).tolist()
        return LossOutput(loss=values[0], components=dict(zip(names, values[1:], strict=True)))

    @property
    def last_output(self) -> LossOutput | None:
        """:meth:`loss_output`, or None before the first forward."""
        return None if self.last_loss is None else self.loss_output()
