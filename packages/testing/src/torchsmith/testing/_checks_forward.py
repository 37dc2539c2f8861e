"""ModelTest checks of the forward pass: shapes, determinism, batching, dropout, inputs, size."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.modules.dropout import _DropoutNd

from ._asserts import assert_close_tensors, assert_finite, count_parameters
from ._harness import build_inputs, build_model, forward, main_output
from ._outputs import iter_tensors
from ._seed import seeded

if TYPE_CHECKING:
    from ._model_test import ModelTest


def check_forward(test: ModelTest, device: torch.device) -> None:
    """1. forward runs, every output tensor is finite, the main output has the declared shape."""
    model = build_model(test, device).eval()
    inputs = build_inputs(test, device)
    with torch.no_grad():
        output = forward(test, model, inputs)
    for name, tensor in iter_tensors(output):
        assert_finite(tensor, name=name)
    main = test.output_of(output)
    expected = test.expected_output_shape(test.batch_size)
    if expected is not None and tuple(main.shape) != tuple(expected):
        raise AssertionError(
            f"main output has shape {tuple(main.shape)}, expected {tuple(expected)} "
            f"(from expected_output_shape({test.batch_size}))"
        )
    if test.batch_dim is not None and not -main.dim() <= test.batch_dim < main.dim():
        raise AssertionError(
            f"main output has shape {tuple(main.shape)}, which has no dimension "
            f"batch_dim={test.batch_dim}; set batch_dim (or None) in the test class"
        )
    if test.batch_dim is not None and main.shape[test.batch_dim] != test.batch_size:
        raise AssertionError(
            f"main output has shape {tuple(main.shape)}: dimension {test.batch_dim} is "
            f"{main.shape[test.batch_dim]}, not the batch size {test.batch_size}; set "
            "batch_dim (or None) in the test class if the batch is elsewhere"
        )


def check_eval_deterministic(test: ModelTest, device: torch.device) -> None:
    """2. two eval-mode passes on the same inputs agree, and eval changes no buffer."""
    model = build_model(test, device).eval()
    inputs = build_inputs(test, device)
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    first = main_output(test, model, inputs)
    second = main_output(test, model, inputs)
    exact = device.type == "cpu"
    assert_close_tensors(
        second,
        first,
        rtol=0.0 if exact else None,
        atol=0.0 if exact else None,
        name="second eval-mode output vs the first",
    )
    for name, before in buffers.items():
        after = dict(model.named_buffers())[name]
        if not _same(after, before):  # NaN where NaN was is no change
            raise AssertionError(
                f"buffer {name!r} changed during an eval-mode forward; eval must not update "
                "state (a running statistic or cache updated regardless of self.training?)"
            )


def check_batching(test: ModelTest, device: torch.device) -> None:
    """3. each row run alone equals that row of the batched run (tolerance by dtype)."""
    if test.batch_dim is None:
        raise AssertionError(
            "batch_dim is None, so rows cannot be compared; skip this check with "
            "skip_checks = {'batching': 'reason'}"
        )
    model = build_model(test, device).eval()
    inputs = build_inputs(test, device)
    batched = main_output(test, model, inputs)
    for index in range(test.batch_size):
        alone = main_output(test, model, test.select_row(inputs, index))
        assert_close_tensors(
            alone,
            batched.narrow(test.batch_dim, index, 1),
            rtol=test.rtol,
            atol=test.atol,
            name=f"row {index} run alone vs row {index} of a batch of {test.batch_size}",
        )


def check_dropout(test: ModelTest, device: torch.device) -> None:
    """7. eval output does not depend on the RNG; train output does where dropout exists."""
    model = build_model(test, device).eval()
    inputs = build_inputs(test, device)
    with seeded(1):
        first = main_output(test, model, inputs)
    with seeded(2):
        second = main_output(test, model, inputs)
    exact = device.type == "cpu"
    assert_close_tensors(
        second,
        first,
        rtol=0.0 if exact else None,
        atol=0.0 if exact else None,
        name="eval-mode output under two RNG seeds (randomness, e.g. dropout, in eval?)",
    )
    layers = active_dropout(model)
    if not layers:
        return
    model.train()
    with seeded(1):
        first = main_output(test, model, inputs)
    with seeded(2):
        second = main_output(test, model, inputs)
    if torch.equal(first, second):
        raise AssertionError(
            f"the model has dropout layers with p > 0 ({', '.join(layers[:5])}) but its "
            "train-mode output is the same under two RNG seeds: dropout is not applied in train"
        )


def active_dropout(model: nn.Module) -> list[str]:
    """Names of dropout modules with a non-zero probability."""
    return [
        name or type(m).__name__
        for name, m in model.named_modules()
        if isinstance(m, _DropoutNd) and m.p > 0
    ]


def check_inplace_inputs(test: ModelTest, device: torch.device) -> None:
    """14. neither an eval nor a train forward modifies an input tensor in place."""
    model = build_model(test, device)
    for mode in ("eval", "train"):
        model.train(mode == "train")
        inputs = build_inputs(test, device)
        before = {k: (v.clone(), v._version) for k, v in inputs.items() if torch.is_tensor(v)}
        model(**inputs)  # deliberately not copied: this is the one check that watches inputs
        changed = [
            _describe_change(key, inputs[key], *before[key])
            for key in before
            if inputs[key]._version != before[key][1] or not _same(inputs[key], before[key][0])
        ]
        if changed:
            raise AssertionError(
                f"forward in {mode} mode modified its inputs in place:\n  " + "\n  ".join(changed)
            )


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(
        torch.equal(a, b)
        or (
            a.is_floating_point()
            and torch.equal(a.isnan(), b.isnan())
            and torch.equal(a.nan_to_num(), b.nan_to_num())
        )
    )


def _describe_change(key: str, now: torch.Tensor, before: torch.Tensor, version: int) -> str:
    text = f"input {key!r}: version counter {version} -> {now._version}"
    if _same(now, before):
        return text + " (values written back unchanged)"
    differ = now != before
    delta = (now.double() - before.double()).abs().max() if now.dtype != torch.bool else 1.0
    return (
        f"{text}; {int(differ.sum())} of {now.numel()} elements changed, "
        f"max abs change {float(delta):.3g}"
    )


def check_parameter_count(test: ModelTest, device: torch.device) -> None:
    """13. the parameter count equals expected_num_parameters (tied parameters counted once)."""
    expected = test.expected_num_parameters
    if expected is None:
        raise AssertionError("expected_num_parameters is None")  # the test method skips first
    model = build_model(test, device)
    actual = count_parameters(model)
    if actual != expected:
        parts = ", ".join(
            f"{name} {count_parameters(child):,}" for name, child in model.named_children()
        )
        raise AssertionError(
            f"model has {actual:,} parameters, expected_num_parameters is {expected:,} "
            f"({actual - expected:+,}); by top-level module: {parts or 'no children'}"
        )
