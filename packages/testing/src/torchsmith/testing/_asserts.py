"""Tensor assertions with messages a person can act on, and parameter counting."""

from __future__ import annotations

import torch
from torch import nn

# (rtol, atol) used when a check compares two runs of the same computation in one dtype.
DTYPE_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-7, 1e-7),
    torch.float32: (1e-4, 1e-5),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (1.6e-2, 1e-2),
}


def tolerance_for(dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for comparing two runs computed in ``dtype``; exact for integer dtypes."""
    return DTYPE_TOLERANCES.get(dtype, (0.0, 0.0))


def assert_close_tensors(
    actual: torch.Tensor,
    expected: torch.Tensor,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    name: str = "tensor",
) -> None:
    """Assert ``|actual - expected| <= atol + rtol * |expected|`` elementwise.

    Tolerances default to the dtype's (see DTYPE_TOLERANCES). On failure the message gives
    the shapes, the max absolute and relative error, where the worst element is, and how
    many elements are out of tolerance.
    """
    if actual.shape != expected.shape:
        raise AssertionError(
            f"{name}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
        )
    default_rtol, default_atol = tolerance_for(expected.dtype)
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    if a.numel() == 0:
        return
    nan_mismatch = torch.isnan(a) != torch.isnan(e)
    if bool(nan_mismatch.any()):
        where = _index(nan_mismatch.to(torch.uint8).argmax(), a.shape)
        raise AssertionError(f"{name}: NaN in one tensor but not the other, first at {where}")
    same_inf = torch.isinf(a) & (a == e)
    diff = torch.where(same_inf | torch.isnan(a), torch.zeros_like(a), (a - e).abs())
    bad = diff > atol + rtol * e.abs()
    if not bool(bad.any()):
        return
    flat = int(diff.argmax())
    where = _index(torch.tensor(flat), a.shape)
    rel = diff / e.abs().clamp_min(torch.finfo(torch.float64).tiny)
    raise AssertionError(
        f"{name}: {int(bad.sum())} of {a.numel()} elements differ beyond rtol={rtol:g}, "
        f"atol={atol:g}\n"
        f"  max abs error {float(diff.max()):.3e} at {where}: "
        f"actual {float(a.flatten()[flat]):.6g}, expected {float(e.flatten()[flat]):.6g}\n"
        f"  max rel error {float(rel.max()):.3e} at {_index(rel.argmax(), a.shape)}"
    )


def assert_finite(tensor: torch.Tensor, *, name: str = "tensor") -> None:
    """Assert no NaN or infinity; the message counts each and says where the first is."""
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return
    bad = ~torch.isfinite(tensor.detach())
    if not bool(bad.any()):
        return
    nans = int(torch.isnan(tensor.detach()).sum())
    infs = int(bad.sum()) - nans
    first = _index(bad.flatten().to(torch.uint8).argmax(), tuple(tensor.shape))
    raise AssertionError(
        f"{name} of shape {tuple(tensor.shape)} is not finite: {nans} NaN and {infs} inf "
        f"of {tensor.numel()} elements, first at {first}"
    )


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements, each shared (tied) parameter counted once."""
    # Module.parameters() yields a tied parameter once, so summing it counts it once.
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _index(flat: torch.Tensor, shape: tuple[int, ...] | torch.Size) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.unravel_index(flat.to(torch.long), tuple(shape)))
