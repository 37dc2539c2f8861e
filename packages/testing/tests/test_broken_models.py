"""Deliberately broken models fail exactly the checks they should, with readable messages.

Each case writes a test module with one ModelTest subclass into a pytester directory, runs
it in process, and compares the outcome of every test item with what is expected.
"""

from __future__ import annotations

import textwrap

import pytest
import torch

from torchsmith.testing import CHECK_METHODS

pytest_plugins = ["pytester"]

MODELS = """
import torch
from torch import nn
from torchsmith.testing import ModelTest


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


class InPlace(Tiny):
    def forward(self, x):
        x.mul_(2.0)
        return super().forward(x)


class Unused(Tiny):
    def __init__(self):
        super().__init__()
        self.extra = nn.Linear(8, 8)


class BatchNormalised(Tiny):
    def forward(self, x):
        out = super().forward(x)
        return out / out.abs().mean()


class AlwaysDropout(Tiny):
    def forward(self, x):
        h = torch.nn.functional.dropout(torch.relu(self.fc1(x)), 0.5, training=True)
        return self.fc2(h)


class Detached(Tiny):
    def forward(self, x):
        return super().forward(x).detach() + self.fc2.bias * 0


class Out:
    def __init__(self, logits, aux):
        self.logits, self.aux = logits, aux


class NaNInAnObject(Tiny):
    def forward(self, x):
        out = super().forward(x)
        return Out(out * float("nan"), out)


class NaNSentinel(Tiny):
    def __init__(self):
        super().__init__()
        self.register_buffer("sentinel", torch.tensor([float("nan"), 1.0]))


class Scalar(Tiny):
    def forward(self, x):
        return super().forward(x).mean()


class ExtraState(Tiny):
    def get_extra_state(self):
        return {"version": 2}

    def set_extra_state(self, state):
        self.version = state["version"]


class Base(ModelTest):
    def make_inputs(self, batch_size):
        return {"x": torch.randn(batch_size, 6)}
"""

# Checks that skip without a declaration (or as slow), whatever the model; device_move
# also skips where there is no GPU.
ALWAYS_SKIPPED = {"gradient_checkpointing", "compile", "fresh_process"}
if not torch.cuda.is_available():
    ALWAYS_SKIPPED.add("device_move")


def run_case(pytester: pytest.Pytester, body: str, *args: str) -> dict[str, str]:
    """Run one ModelTest subclass; check name -> 'passed' / 'failed' / 'skipped'."""
    pytester.makepyfile(test_case=MODELS + textwrap.dedent(body))
    reprec = pytester.inline_run("-p", "no:cacheprovider", *args)
    outcomes = {}
    of_method = {method: check for check, method in CHECK_METHODS.items()}
    for report in reprec.getreports("pytest_runtest_logreport"):
        if report.when == "call" or report.outcome != "passed":
            method = report.nodeid.rsplit("::", 1)[-1]
            outcomes[of_method[method]] = report.outcome
            if report.failed:
                outcomes[of_method[method] + ":message"] = report.longreprtext
    return outcomes


def failed(outcomes: dict[str, str]) -> set[str]:
    return {k for k, v in outcomes.items() if v == "failed" and ":" not in k}


def test_a_correct_model_passes_every_check_it_can_run(pytester: pytest.Pytester) -> None:
    outcomes = run_case(
        pytester,
        """
        class TestTiny(Base):
            expected_num_parameters = 6 * 8 + 8 + 8 * 4 + 4

            def make_model(self):
                return Tiny()
        """,
    )
    assert set(outcomes) == set(CHECK_METHODS)
    assert failed(outcomes) == set()
    assert {k for k, v in outcomes.items() if v == "skipped"} == ALWAYS_SKIPPED


def test_an_inplace_input_edit_fails_only_the_inplace_check(pytester: pytest.Pytester) -> None:
    outcomes = run_case(
        pytester, "class TestInPlace(Base):\n    make_model = lambda self: InPlace()"
    )
    assert failed(outcomes) == {"inplace_inputs"}
    message = outcomes["inplace_inputs:message"]
    assert "forward in eval mode modified its inputs in place" in message
    assert "input 'x': version counter 0 -> 1" in message
    assert "18 of 18 elements changed" in message


def test_an_unused_parameter_fails_only_the_gradient_check(pytester: pytest.Pytester) -> None:
    outcomes = run_case(pytester, "class TestUnused(Base):\n    make_model = lambda self: Unused()")
    assert failed(outcomes) == {"gradients"}
    message = outcomes["gradients:message"]
    assert "2 parameter(s) got no gradient (unused): extra.weight, extra.bias" in message


def test_batch_dependent_normalisation_fails_only_batching(pytester: pytest.Pytester) -> None:
    outcomes = run_case(
        pytester, "class TestNorm(Base):\n    make_model = lambda self: BatchNormalised()"
    )
    assert failed(outcomes) == {"batching"}
    message = outcomes["batching:message"]
    assert "row 0 run alone vs row 0 of a batch of 3" in message
    assert "max abs error" in message and "max rel error" in message


def test_dropout_in_eval_fails_determinism_and_dropout(pytester: pytest.Pytester) -> None:
    outcomes = run_case(
        pytester, "class TestDrop(Base):\n    make_model = lambda self: AlwaysDropout()"
    )
    assert {"eval_deterministic", "dropout"} <= failed(outcomes)
    assert "eval-mode output under two RNG seeds" in outcomes["dropout:message"]
    # The checks that never compare two runs still pass.
    assert outcomes["forward"] == outcomes["gradients"] == outcomes["inplace_inputs"] == "passed"


def test_a_detached_output_fails_gradients_and_the_optimizer_step(
    pytester: pytest.Pytester,
) -> None:
    outcomes = run_case(pytester, "class TestDet(Base):\n    make_model = lambda self: Detached()")
    assert failed(outcomes) == {"gradients", "optimizer_step"}
    assert "all-zero gradient: fc2.bias" in outcomes["gradients:message"]
    assert "did not lower the loss" in outcomes["optimizer_step:message"]


def test_a_wrong_declared_count_fails_with_a_breakdown(pytester: pytest.Pytester) -> None:
    outcomes = run_case(
        pytester,
        """
        class TestCount(Base):
            expected_num_parameters = 100

            def make_model(self):
                return Tiny()
        """,
    )
    assert failed(outcomes) == {"parameter_count"}
    message = outcomes["parameter_count:message"]
    assert "model has 92 parameters, expected_num_parameters is 100 (-8)" in message
    assert "fc1 56, drop 0, fc2 36" in message


def test_skip_checks_skips_with_the_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_case=MODELS
        + textwrap.dedent(
            """
            class TestSkip(Base):
                skip_checks = {"batching": "rows are mixed on purpose"}
                make_model = lambda self: BatchNormalised()
            """
        )
    )
    result = pytester.runpytest("-rs", "-k", "batching")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*batching skipped by TestSkip: rows are mixed on purpose*"])


def test_an_unknown_skip_check_is_a_clear_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_case=MODELS
        + textwrap.dedent(
            """
            class TestTypo(Base):
                skip_checks = {"batchign": "typo"}
                make_model = lambda self: Tiny()
            """
        )
    )
    result = pytester.runpytest("-k", "forward")
    result.assert_outcomes(failed=1)
    assert "TestTypo.skip_checks names unknown check(s) ['batchign']" in result.stdout.str()


@pytest.mark.slow
def test_fresh_process_load_passes_and_fails_as_it_should(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_case=MODELS
        + textwrap.dedent(
            """
            class TestGood(Base):
                make_model = lambda self: Tiny()


            class TestRandomBuffer(Base):
                # A buffer that is not saved and differs per process: reload cannot match.
                def make_model(self):
                    model = Tiny()
                    import os
                    model.register_buffer("noise", torch.full((4,), float(os.getpid())),
                                          persistent=False)
                    model.forward = lambda x, m=model: Tiny.forward(m, x) + m.noise
                    return model
            """
        )
    )
    result = pytester.runpytest("--run-slow", "-k", "fresh_process")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*output in a fresh process*"])


def test_select_row_keeps_an_unbatched_input_whole(pytester: pytest.Pytester) -> None:
    body = """
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 3)

        def forward(self, x, scale):
            return self.fc(x) * scale  # scale: one factor per output feature, not per row


    class TestScaled(Base):
        make_model = lambda self: Scaled()

        def make_inputs(self, batch_size):
            return {"x": torch.randn(batch_size, 6), "scale": torch.tensor([1.0, 2.0, 3.0])}
    {select_row}
    """
    override = """
        def select_row(self, inputs, index):
            return {"x": inputs["x"][index : index + 1], "scale": inputs["scale"]}
    """
    naive = run_case(pytester, body.replace("{select_row}", ""), "-k", "batching")
    assert naive["batching"] == "failed"  # scale (3,) looks batched to the default slicing
    fixed = run_case(pytester, body.replace("{select_row}", override), "-k", "batching")
    assert fixed["batching"] == "passed"


def test_nan_in_a_plain_objects_output_fails_forward(pytester: pytest.Pytester) -> None:
    outcomes = run_case(
        pytester, "class TestObj(Base):\n    make_model = lambda self: NaNInAnObject()"
    )
    assert "forward" in failed(outcomes)
    assert "output.logits" in outcomes["forward:message"]
    assert "not finite" in outcomes["forward:message"]


def test_a_buffer_holding_nan_is_no_change_in_eval(pytester: pytest.Pytester) -> None:
    outcomes = run_case(
        pytester, "class TestNaNBuffer(Base):\n    make_model = lambda self: NaNSentinel()"
    )
    assert "eval_deterministic" not in failed(outcomes)


def test_a_scalar_output_names_the_batch_dim_it_lacks(pytester: pytest.Pytester) -> None:
    outcomes = run_case(pytester, "class TestScalar(Base):\n    make_model = lambda self: Scalar()")
    assert "forward" in failed(outcomes)
    assert "has no dimension batch_dim=0" in outcomes["forward:message"]


def test_extra_state_that_is_no_tensor_is_named_by_the_safetensors_check(
    pytester: pytest.Pytester,
) -> None:
    outcomes = run_case(
        pytester, "class TestExtra(Base):\n    make_model = lambda self: ExtraState()"
    )
    assert failed(outcomes) == {"safetensors"}
    assert "keeps extra state (get_extra_state returns a dict)" in outcomes["safetensors:message"]


def test_an_fp16_model_steps_without_nan_from_adams_eps(pytester: pytest.Pytester) -> None:
    """Adam's eps of 1e-8 is 0 in fp16: a dead ReLU unit's zero gradient stepped to NaN."""
    outcomes = run_case(
        pytester,
        """
        class TestHalf(Base):
            def make_model(self):
                model = Tiny().half()
                with torch.no_grad():
                    model.fc1.bias[:4] = -100.0  # four dead units: zero gradients
                return model

            def make_inputs(self, batch_size):
                return {"x": torch.randn(batch_size, 6).half()}
        """,
        "-k",
        "optimizer_step",
    )
    assert outcomes["optimizer_step"] == "passed", outcomes
