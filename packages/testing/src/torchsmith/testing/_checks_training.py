"""ModelTest checks of training and numerics: gradients, a step, checkpointing, bf16, compile."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import pytest
import torch
from torch import nn

from ._asserts import assert_close_tensors, assert_finite
from ._hardware import cached_hardware
from ._harness import (
    build_inputs,
    build_model,
    forward,
    gradients,
    main_output,
    relative_l2,
)
from ._seed import seeded

if TYPE_CHECKING:
    from ._model_test import ModelTest


def check_gradients(test: ModelTest, device: torch.device) -> None:
    """4. one backward pass gives every trainable parameter a finite, non-zero gradient."""
    model = build_model(test, device).train()
    inputs = build_inputs(test, device)
    loss = test.loss_of(forward(test, model, inputs))
    assert_finite(loss, name="loss")
    loss.backward()  # type: ignore[no-untyped-call]
    grads = gradients(model)
    unused = [name for name, g in grads.items() if g is None]
    zero = [name for name, g in grads.items() if g is not None and not bool(g.any())]
    for name, grad in grads.items():
        if grad is not None:
            assert_finite(grad, name=f"gradient of {name}")
    problems = []
    if unused:
        problems.append(f"{len(unused)} parameter(s) got no gradient (unused): {_names(unused)}")
    if zero:
        problems.append(f"{len(zero)} parameter(s) got an all-zero gradient: {_names(zero)}")
    if problems:
        raise AssertionError(
            "not every trainable parameter is trained by the loss:\n  "
            + "\n  ".join(problems)
            + "\n  (freeze them with requires_grad_(False) or remove them if that is intended)"
        )


def _names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def check_optimizer_step(test: ModelTest, device: torch.device) -> None:
    """12. one optimizer step (make_optimizer, Adam by default) on a fixed batch lowers the loss."""
    model = build_model(test, device).eval()  # eval: no dropout noise between the two losses
    inputs = build_inputs(test, device)
    optimizer = test.make_optimizer([p for p in model.parameters() if p.requires_grad])
    before = test.loss_of(forward(test, model, inputs))
    assert_finite(before, name="loss before the step")
    before.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    after = test.loss_of(forward(test, model, inputs)).detach()
    assert_finite(after, name="loss after the step")
    if not float(after) < float(before.detach()):
        norm = torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None])
        raise AssertionError(
            f"one {type(optimizer).__name__} step did not lower the loss: before "
            f"{float(before.detach()):.6g}, after {float(after):.6g} (gradient norm "
            f"{float(norm.norm()):.3g}); is the output detached, or the learning rate too high?"
        )


def check_gradient_checkpointing(test: ModelTest, device: torch.device) -> None:
    """11. with gradient checkpointing on, the gradients equal those without it."""
    plain = build_model(test, device).train()
    checkpointed = build_model(test, device).train()
    if not test.enable_gradient_checkpointing(checkpointed):
        pytest.skip(
            f"{type(checkpointed).__name__} does not support gradient checkpointing (no "
            "activation_checkpointing_enable() or gradient_checkpointing_enable()); override "
            "enable_gradient_checkpointing to test it"
        )
    inputs = build_inputs(test, device)
    for model in (plain, checkpointed):
        with seeded(test.seed + 7):  # the same dropout masks in both runs
            test.loss_of(forward(test, model, inputs)).backward()  # type: ignore[no-untyped-call]
    expected, actual = gradients(plain), gradients(checkpointed)
    for name, grad in expected.items():
        other = actual[name]
        if (grad is None) != (other is None):
            state = "only with" if grad is None else "only without"
            raise AssertionError(f"parameter {name!r} gets a gradient {state} checkpointing")
        if grad is not None and other is not None:
            assert_close_tensors(
                other,
                grad,
                rtol=test.rtol,
                atol=test.atol,
                name=f"gradient of {name} with vs without checkpointing",
            )


def check_bf16(test: ModelTest, device: torch.device) -> None:
    """9. under bf16 autocast the main output is within bf16_tolerance (relative L2) of fp32."""
    model = build_model(test, device).eval()
    inputs = build_inputs(test, device)
    reference = main_output(test, model, inputs)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        mixed = main_output(test, model, inputs)
    assert_finite(mixed, name="bf16 autocast output")
    error = relative_l2(mixed.float(), reference.float())
    if error > test.bf16_tolerance:
        diff = (mixed.float() - reference.float()).abs()
        where = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
        raise AssertionError(
            f"bf16 autocast output is {error:.3g} away from fp32 in relative L2 error, more "
            f"than bf16_tolerance={test.bf16_tolerance:g}; max abs error "
            f"{float(diff.max()):.3g} at {where}"
        )


def check_compile(test: ModelTest, device: torch.device) -> None:
    """10. torch.compile(model) gives the eager output within compile_rtol / compile_atol."""
    hardware = cached_hardware()
    if not hardware.capabilities.get("compile", False):
        pytest.skip(f"torch.compile is unavailable: {hardware.reasons.get('compile', '?')}")
    model = build_model(test, device).eval()
    inputs = build_inputs(test, device)
    eager = main_output(test, model, inputs)
    torch._dynamo.reset()
    try:
        compiled = cast(nn.Module, torch.compile(model, backend=test.compile_backend))
        result = main_output(test, compiled, inputs)
    finally:
        torch._dynamo.reset()
    assert_close_tensors(
        result,
        eager,
        rtol=test.compile_rtol,
        atol=test.compile_atol,
        name=f"torch.compile(backend={test.compile_backend!r}) output vs eager",
    )


def check_device_move(test: ModelTest, device: torch.device) -> None:
    """8. cpu -> cuda -> cpu: the cuda output is close to the cpu one, and back is identical."""
    if not torch.cuda.is_available():
        pytest.skip("requires CUDA: torch sees no CUDA device")
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    model = build_model(test, cpu).eval()
    on_cpu = main_output(test, model, build_inputs(test, cpu))
    on_cuda = main_output(test, model.to(cuda), build_inputs(test, cuda))
    back = main_output(test, model.to(cpu), build_inputs(test, cpu))
    assert_close_tensors(
        on_cuda.cpu(),
        on_cpu,
        rtol=test.device_move_rtol,
        atol=test.device_move_atol,
        name="output on cuda vs on cpu",
    )
    assert_close_tensors(back, on_cpu, rtol=0.0, atol=0.0, name="output after moving back to cpu")
