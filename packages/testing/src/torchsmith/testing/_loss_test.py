"""LossTest: generic checks for a loss function, one pytest item each.

    class TestMyCrossEntropy(LossTest):
        invariances = {"logit shift": add_constant("logits", 3.0)}

        def make_loss(self):
            return torch.nn.CrossEntropyLoss()

        def make_inputs(self):
            return {"input": torch.randn(4, 5), "target": torch.randint(0, 5, (4,))}

The loss is called as ``make_loss()(**make_inputs())``; ``loss_of`` picks the scalar from
what it returns (a tensor, or an object or dict with ``loss``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import pytest
import torch
from torch import nn
from torch.autograd.gradcheck import GradcheckError

from torchsmith.interfaces import ConfigError, DataError

from ._asserts import assert_close_tensors, assert_finite
from ._harness import relative_l2
from ._seed import seeded

Inputs = dict[str, torch.Tensor]
Transform = Callable[[Inputs], Inputs]

LOSS_CHECK_METHODS: dict[str, str] = {
    "scalar_finite": "test_loss_is_finite_scalar",
    "backward_finite": "test_backward_is_finite",
    "gradcheck": "test_gradcheck_fp64",
    "float16": "test_finite_in_float16",
    "bfloat16": "test_finite_in_bfloat16",
    "invariances": "test_declared_invariances",
}
LOSS_CHECK_OF_METHOD = {method: check for check, method in LOSS_CHECK_METHODS.items()}


class LossTest:
    """Base class of a loss's test suite; subclass it as ``class TestX(LossTest)``."""

    seed: ClassVar[int] = 0
    # Inputs gradcheck differentiates (None: every floating-point input).
    differentiable_inputs: ClassVar[tuple[str, ...] | None] = None
    # name -> transform of the inputs that must leave the loss unchanged.
    invariances: ClassVar[dict[str, Transform]] = {}
    invariance_rtol: ClassVar[float] = 1e-5
    invariance_atol: ClassVar[float] = 1e-6
    # Half-precision loss vs fp32: relative error at most this (None: finiteness only).
    half_tolerance: ClassVar[float | None] = 0.05
    gradcheck_atol: ClassVar[float] = 1e-5
    gradcheck_rtol: ClassVar[float] = 1e-3
    skip_checks: ClassVar[dict[str, str]] = {}

    def make_loss(self) -> Callable[..., Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement make_loss()")

    def make_inputs(self) -> Inputs:
        raise NotImplementedError(f"{type(self).__name__} must implement make_inputs()")

    def loss_of(self, output: Any) -> torch.Tensor:
        """The scalar loss: the output itself, ``output.loss`` or ``output['loss']``."""
        if isinstance(output, torch.Tensor):
            return output
        value = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
        if isinstance(value, torch.Tensor):
            return value
        raise DataError(
            f"the loss returned {type(output).__name__} with no tensor 'loss'; override loss_of"
        )

    # ------------------------------------------------------------ the checks

    def test_loss_is_finite_scalar(self, device: torch.device) -> None:
        self._skip_if_asked("scalar_finite")
        loss = self._loss(device, torch.float32)
        if loss.dim() != 0:
            raise AssertionError(f"the loss has shape {tuple(loss.shape)}; expected a scalar")
        assert_finite(loss, name="loss")

    def test_backward_is_finite(self, device: torch.device) -> None:
        self._skip_if_asked("backward_finite")
        inputs = self._inputs(device, torch.float32, requires_grad=True)
        self.loss_of(self._module(device, torch.float32)(**inputs)).backward()  # type: ignore[no-untyped-call]
        grads = {k: v.grad for k, v in inputs.items() if v.requires_grad}
        for name, grad in grads.items():
            if grad is None:
                raise AssertionError(f"input {name!r} gets no gradient from the loss")
            assert_finite(grad, name=f"gradient of {name}")
        if grads and not any(bool(g.any()) for g in grads.values() if g is not None):
            raise AssertionError(f"every input gradient is zero ({', '.join(grads)})")

    def test_gradcheck_fp64(self, device: torch.device) -> None:
        self._skip_if_asked("gradcheck")
        inputs = self._inputs(device, torch.float64, requires_grad=True)
        names = [k for k, v in inputs.items() if v.requires_grad]
        if not names:
            pytest.skip("no floating-point input to differentiate")
        loss = self._module(device, torch.float64)

        def fn(*tensors: torch.Tensor) -> torch.Tensor:
            return self.loss_of(loss(**{**inputs, **dict(zip(names, tensors, strict=True))}))

        try:
            torch.autograd.gradcheck(
                fn,
                tuple(inputs[n] for n in names),
                atol=self.gradcheck_atol,
                rtol=self.gradcheck_rtol,
            )
        except GradcheckError as exc:
            first, _, rest = str(exc).partition("\n")
            raise AssertionError(
                f"gradcheck in float64 failed (inputs in order: {names}): {first}\n{rest[:600]}"
            ) from None

    def test_finite_in_float16(self, device: torch.device) -> None:
        self._skip_if_asked("float16")
        self._check_half(device, torch.float16)

    def test_finite_in_bfloat16(self, device: torch.device) -> None:
        self._skip_if_asked("bfloat16")
        self._check_half(device, torch.bfloat16)

    def test_declared_invariances(self, device: torch.device) -> None:
        self._skip_if_asked("invariances")
        if not self.invariances:
            pytest.skip("the test class declares no invariances")
        reference = self._loss(device, torch.float64)
        failures = []
        for name, transform in self.invariances.items():
            inputs = self._inputs(device, torch.float64)
            with seeded(self.seed + 3):
                changed = transform(inputs)
            value = self.loss_of(self._module(device, torch.float64)(**changed)).detach()
            try:
                assert_close_tensors(
                    value,
                    reference,
                    rtol=self.invariance_rtol,
                    atol=self.invariance_atol,
                    name=f"loss under {name!r}",
                )
            except AssertionError as exc:
                failures.append(str(exc))
        if failures:
            raise AssertionError("declared invariance(s) do not hold:\n" + "\n".join(failures))

    # ------------------------------------------------------------ plumbing

    def _check_half(self, device: torch.device, dtype: torch.dtype) -> None:
        loss = self._loss(device, dtype)
        assert_finite(loss, name=f"loss in {dtype}")
        if self.half_tolerance is not None:
            reference = self._loss(device, torch.float32)
            error = relative_l2(loss.float(), reference)
            if error > self.half_tolerance:
                raise AssertionError(
                    f"the loss in {dtype} is {float(loss):.6g}, in float32 "
                    f"{float(reference):.6g}: relative error {error:.3g} > half_tolerance "
                    f"{self.half_tolerance:g}"
                )

    def _loss(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        with torch.no_grad():
            inputs = self._inputs(device, dtype)
            return self.loss_of(self._module(device, dtype)(**inputs)).detach()

    def _module(self, device: torch.device, dtype: torch.dtype) -> Callable[..., Any]:
        with seeded(self.seed):
            loss = self.make_loss()
        if isinstance(loss, nn.Module):
            return copy.deepcopy(loss).to(device=device, dtype=dtype)
        return loss

    def _inputs(
        self, device: torch.device, dtype: torch.dtype, requires_grad: bool = False
    ) -> Inputs:
        with seeded(self.seed + 1):
            inputs = self.make_inputs()
        if not isinstance(inputs, Mapping):
            raise ConfigError(f"{type(self).__name__}.make_inputs() must return a dict")
        wanted = self.differentiable_inputs
        out = {}
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                value = value.to(device=device, dtype=dtype)
                grad = requires_grad and (wanted is None or key in wanted)
                value = value.detach().requires_grad_(grad)
            elif isinstance(value, torch.Tensor):
                value = value.to(device)
            out[key] = value
        return out

    def _skip_if_asked(self, name: str) -> None:
        unknown = set(self.skip_checks) - set(LOSS_CHECK_METHODS)
        if unknown:
            raise ConfigError(
                f"{type(self).__name__}.skip_checks names unknown check(s) {sorted(unknown)}; "
                f"the checks are: {', '.join(LOSS_CHECK_METHODS)}"
            )
        if name in self.skip_checks:
            pytest.skip(f"{name} skipped by {type(self).__name__}: {self.skip_checks[name]}")


# ---------------------------------------------------------------- stock invariances


def permute_batch(*keys: str) -> Transform:
    """Shuffle dim 0 of the named inputs with one shared random permutation."""

    def transform(inputs: Inputs) -> Inputs:
        size = inputs[keys[0]].shape[0]
        order = torch.randperm(size)
        return {k: v[order.to(v.device)] if k in keys else v for k, v in inputs.items()}

    return transform


def scale_input(key: str, factor: float) -> Transform:
    """Multiply one input by ``factor`` (e.g. scale invariance of a cosine loss)."""
    return lambda inputs: {**inputs, key: inputs[key] * factor}


def add_constant(key: str, value: float) -> Transform:
    """Add ``value`` to one input (e.g. softmax's invariance to a shift of the logits)."""
    return lambda inputs: {**inputs, key: inputs[key] + value}
