"""LossTest on torch's own losses (which must pass) and on broken ones (which must not)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

HEADER = """
import torch
from torch import nn
from torchsmith.testing import LossTest, add_constant, permute_batch, scale_input


class WrongBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x * x).sum()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x  # should be 2 * x


def pairs():
    return {"input": torch.randn(4, 5), "target": torch.randn(4, 5)}
"""


def outcomes(pytester: pytest.Pytester, body: str) -> dict[str, str]:
    pytester.makepyfile(test_losses=HEADER + body)
    reprec = pytester.inline_run("-p", "no:cacheprovider")
    found = {}
    for report in reprec.getreports("pytest_runtest_logreport"):
        if report.when == "call" or report.outcome != "passed":
            cls, method = report.nodeid.split("::")[-2:]
            key = method.removeprefix("test_")
            found[key if cls == first_class(reprec) else f"{cls}.{key}"] = report.outcome
            if report.failed:
                found["message"] = report.longreprtext
    return found


def first_class(reprec: pytest.HookRecorder) -> str:
    first = reprec.getreports("pytest_runtest_logreport")[0]
    return str(first.nodeid.split("::")[-2])


def test_torch_cross_entropy_passes_with_its_shift_invariance(pytester: pytest.Pytester) -> None:
    found = outcomes(
        pytester,
        """
class TestCE(LossTest):
    invariances = {"logit shift": add_constant("input", 3.0),
                   "batch order": permute_batch("input", "target")}

    def make_loss(self):
        return nn.CrossEntropyLoss()

    def make_inputs(self):
        return {"input": torch.randn(6, 5), "target": torch.randint(0, 5, (6,))}
""",
    )
    assert set(found.values()) == {"passed"} and len(found) == 6


def test_a_wrong_backward_fails_gradcheck_only(pytester: pytest.Pytester) -> None:
    found = outcomes(
        pytester,
        """
class TestWrong(LossTest):
    def make_loss(self):
        return lambda input, target: WrongBackward.apply(input - target)

    make_inputs = staticmethod(pairs)
""",
    )
    assert found["gradcheck_fp64"] == "failed"
    assert "gradcheck in float64 failed (inputs in order: ['input', 'target'])" in found["message"]
    assert "Jacobian mismatch" in found["message"]
    others = {k: v for k, v in found.items() if k not in ("gradcheck_fp64", "message")}
    assert set(others.values()) <= {"passed", "skipped"}


def test_overflow_in_float16_fails_the_float16_check(pytester: pytest.Pytester) -> None:
    found = outcomes(
        pytester,
        """
class TestExp(LossTest):
    def make_loss(self):
        return lambda input: torch.exp(input * 12).mean()

    def make_inputs(self):
        return {"input": torch.linspace(-1, 1, 8)}
""",
    )
    assert found["finite_in_float16"] == "failed"
    assert "loss in torch.float16 of shape () is not finite: 0 NaN and 1 inf" in found["message"]
    assert found["finite_in_bfloat16"] == "passed"


def test_a_false_invariance_and_a_non_scalar_loss_fail(pytester: pytest.Pytester) -> None:
    found = outcomes(
        pytester,
        """
class TestMSE(LossTest):
    invariances = {"batch order": permute_batch("input", "target"),
                   "doubling": scale_input("input", 2.0)}

    def make_loss(self):
        return nn.MSELoss()

    make_inputs = staticmethod(pairs)


class TestUnreduced(LossTest):
    def make_loss(self):
        return nn.MSELoss(reduction="none")

    make_inputs = staticmethod(pairs)
    skip_checks = {"backward_finite": "not a scalar", "gradcheck": "not a scalar",
                   "float16": "not a scalar", "bfloat16": "not a scalar"}
""",
    )
    assert found["declared_invariances"] == "failed"
    assert found["TestUnreduced.loss_is_finite_scalar"] == "failed"


def test_invariance_failure_names_the_transform(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_losses=HEADER
        + """
class TestMSE(LossTest):
    invariances = {"doubling": scale_input("input", 2.0)}
    make_loss = staticmethod(nn.MSELoss)
    make_inputs = staticmethod(pairs)
"""
    )
    result = pytester.runpytest("-k", "invariances")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*declared invariance(s) do not hold:*", "*loss under 'doubling'*"]
    )
