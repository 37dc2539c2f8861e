"""What every ModelTest check does the same way: build, feed, run and score a model.

Each check builds its own model and inputs from the subclass's factories under a fixed
seed, and every forward pass gets fresh copies of the inputs, so a model that edits its
inputs in place fails the in-place check and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from torchsmith.interfaces import ConfigError, DataError

from ._outputs import iter_tensors
from ._seed import seeded

if TYPE_CHECKING:
    from ._model_test import ModelTest

Inputs = dict[str, torch.Tensor]

# Seeds of the model factory and of the input factory; the loss projection has its own.
INPUT_SEED_OFFSET = 1
# The model that receives saved weights is built under another seed, so a load that silently
# does nothing cannot pass by accident.
OTHER_INIT_SEED_OFFSET = 1000
_PROJECTION_SEED = 20240611


def build_model(test: ModelTest, device: torch.device, *, seed_offset: int = 0) -> nn.Module:
    """The subclass's model, built under ``test.seed + seed_offset``, on ``device``."""
    with seeded(test.seed + seed_offset):
        model = test.make_model()
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"{type(test).__name__}.make_model() returned {type(model).__name__}, "
            "not a torch.nn.Module"
        )
    return model.to(device)


def build_inputs(test: ModelTest, device: torch.device, batch_size: int | None = None) -> Inputs:
    """The subclass's inputs for ``batch_size`` rows (default ``test.batch_size``), on device."""
    size = test.batch_size if batch_size is None else batch_size
    with seeded(test.seed + INPUT_SEED_OFFSET):
        inputs = test.make_inputs(size)
    if not isinstance(inputs, Mapping):
        raise ConfigError(
            f"{type(test).__name__}.make_inputs() returned {type(inputs).__name__}; it must "
            "return a dict of keyword arguments for forward, e.g. {'input_ids': tensor}"
        )
    return {key: _to(value, device) for key, value in inputs.items()}


def _to(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, torch.Tensor) else value


def fresh(inputs: Inputs) -> Inputs:
    """A copy of ``inputs`` whose tensors the model may modify without affecting the original."""
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def forward(test: ModelTest, model: nn.Module, inputs: Inputs) -> Any:
    """The model's raw output on a fresh copy of ``inputs``."""
    return model(**fresh(inputs))


def main_output(test: ModelTest, model: nn.Module, inputs: Inputs) -> torch.Tensor:
    """The main tensor (``test.output_of``) of the model's output, without autograd."""
    with torch.no_grad():
        return test.output_of(forward(test, model, inputs))


def rows(inputs: Inputs, batch_size: int, index: int) -> Inputs:
    """Row ``index`` of every input whose first dimension is the batch; others unchanged."""
    out: Inputs = {}
    for key, value in inputs.items():
        batched = isinstance(value, torch.Tensor) and value.dim() > 0
        out[key] = value[index : index + 1] if batched and value.shape[0] == batch_size else value
    return out


def projection_loss(output: Any) -> torch.Tensor:
    """A scalar that depends on every floating tensor of ``output`` with a gradient.

    Each tensor is dotted with fixed random weights: unlike sum() or a sum of squares, this
    cannot cancel through a normalisation layer, so every parameter that shapes the output
    receives a non-zero gradient.
    """
    terms = []
    for index, (_, tensor) in enumerate(iter_tensors(output)):
        if not tensor.is_floating_point() or not tensor.requires_grad:
            continue
        generator = torch.Generator().manual_seed(_PROJECTION_SEED + index)
        weights = torch.randn(tensor.shape, generator=generator).to(tensor.device)
        terms.append((tensor.float() * weights).mean())
    if not terms:
        raise DataError(
            "the model output has no floating tensor that requires grad, so no loss can be "
            "formed; override loss_of(self, output) in the test class"
        )
    return torch.stack(terms).sum()


def relative_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| in float64 (0 when both are zero)."""
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    scale = float(e.norm())
    return float((a - e).norm()) / scale if scale > 0 else float((a - e).norm())


def gradients(model: nn.Module) -> dict[str, torch.Tensor | None]:
    """Each trainable parameter's gradient by name (None where none reached it)."""
    return {
        name: None if p.grad is None else p.grad.detach().clone()
        for name, p in model.named_parameters()
        if p.requires_grad
    }
