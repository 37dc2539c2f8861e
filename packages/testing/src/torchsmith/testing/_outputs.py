"""Finding tensors in whatever a model returns: a tensor, tuple, dict, dataclass or object."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from torchsmith.interfaces import DataError

# Attributes (or keys) that hold the main output of common model families, in priority order.
MAIN_OUTPUT_NAMES = ("logits", "last_hidden_state", "logits_per_image", "prediction_logits")


def main_tensor(output: Any) -> torch.Tensor:
    """The main tensor of a model output.

    A tensor is returned as is; otherwise the first of MAIN_OUTPUT_NAMES found as a key or
    attribute; otherwise the first tensor of a tuple, list, dict or dataclass.
    """
    if isinstance(output, torch.Tensor):
        return output
    for name in MAIN_OUTPUT_NAMES:
        value = output.get(name) if isinstance(output, Mapping) else getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    for _, tensor in iter_tensors(output):
        return tensor
    raise DataError(
        f"cannot find a tensor in a model output of type {type(output).__name__}; "
        "override output_of(self, output) in the test class to pick one"
    )


def iter_tensors(
    output: Any, prefix: str = "output", depth: int = 0
) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in a nested output, with a path such as ``output.logits`` or ``output[0]``:
    in tensors, mappings, lists, tuples and dataclasses (8 levels deep at most), and the
    public attributes of an output that is a plain object. A plain object inside an output
    is not walked: transformers' ``past_key_values`` cache is one, and its tensors are no
    output (a checkpointed run has none)."""
    if depth > 8:
        return
    step = depth + 1
    if isinstance(output, torch.Tensor):
        yield prefix, output
    elif isinstance(output, Mapping):
        for key, value in output.items():
            yield from iter_tensors(value, f"{prefix}.{key}", step)
    elif isinstance(output, list | tuple):
        for i, value in enumerate(output):
            yield from iter_tensors(value, f"{prefix}[{i}]", step)
    elif dataclasses.is_dataclass(output) and not isinstance(output, type):
        for field in dataclasses.fields(output):
            yield from iter_tensors(getattr(output, field.name), f"{prefix}.{field.name}", step)
    elif depth == 0 and hasattr(output, "__dict__") and not isinstance(output, type):
        for name, value in vars(output).items():
            if not name.startswith("_"):
                yield from iter_tensors(value, f"{prefix}.{name}", step)
