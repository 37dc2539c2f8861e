"""--torchsmith-report: which checks passed per model and device, as JSON and markdown."""

from __future__ import annotations

import json

import pytest

from torchsmith.interfaces import SchemaVersionError
from torchsmith.testing import CHECK_METHODS, LOSS_CHECK_METHODS, SuiteReport, read_report

pytest_plugins = ["pytester"]

SUITES = """
import torch
from torch import nn
from torchsmith.testing import LossTest, ModelTest


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.unused = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(x)


class TestTiny(ModelTest):
    skip_checks = {"bf16": "not needed here"}

    def make_model(self):
        return Tiny()

    def make_inputs(self, batch_size):
        return {"x": torch.randn(batch_size, 4)}


class TestMSE(LossTest):
    def make_loss(self):
        return nn.MSELoss()

    def make_inputs(self):
        return {"input": torch.randn(3, 2), "target": torch.randn(3, 2)}


def test_not_a_check():
    pass
"""


@pytest.fixture
def report(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> SuiteReport:
    monkeypatch.setenv("TORCHSMITH_DEVICE", "cpu")  # the same rows where a GPU is present
    pytester.makepyfile(test_suites=SUITES)
    result = pytester.runpytest("--torchsmith-report=out/report.json", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["torchsmith report: *report.json and *report.md"])
    assert sorted(p.name for p in (pytester.path / "out").iterdir()) == ["report.json", "report.md"]
    return read_report(pytester.path / "out" / "report.json")


def test_one_entry_per_test_class_with_every_check(report: SuiteReport) -> None:
    by_name = {m.model: m for m in report.models}
    assert set(by_name) == {"TestTiny", "TestMSE"}
    tiny, mse = by_name["TestTiny"], by_name["TestMSE"]
    assert (tiny.kind, tiny.device, tiny.nodeid) == ("model", "cpu", "test_suites.py::TestTiny")
    assert {c.check for c in tiny.checks} == set(CHECK_METHODS)
    assert {c.check for c in mse.checks} == set(LOSS_CHECK_METHODS)
    assert report.hardware is not None and report.hardware.cpu_cores_logical >= 1


def test_outcomes_and_messages(report: SuiteReport) -> None:
    tiny = next(m for m in report.models if m.model == "TestTiny")
    outcome = {c.check: c for c in tiny.checks}
    assert outcome["forward"].outcome == "passed" and outcome["forward"].message is None
    assert outcome["gradients"].outcome == "failed"
    assert "unused.weight, unused.bias" in (outcome["gradients"].message or "")
    assert outcome["bf16"].outcome == "skipped"
    assert outcome["bf16"].message == "bf16 skipped by TestTiny: not needed here"
    assert not tiny.passed
    validation = tiny.validation()
    assert validation["forward"] == "passed"
    assert validation["bf16"].startswith("skipped: bf16 skipped by TestTiny")
    assert validation["gradients"].startswith("failed: AssertionError: not every trainable")


def test_counts_and_markdown(report: SuiteReport) -> None:
    counts = report.counts()
    assert counts["failed"] == 1 and counts["error"] == 0
    assert counts["passed"] + counts["failed"] + counts["skipped"] == 14 + 6
    text = report.markdown()
    assert "| TestTiny | cpu |" in text and "| gradients |" in text
    assert "- **TestTiny.gradients**: AssertionError: not every trainable parameter" in text


def test_a_newer_major_is_refused(pytester: pytest.Pytester, report: SuiteReport) -> None:
    data = json.loads(report.write())
    data["schema_version"] = "2.0"
    path = pytester.path / "future.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SchemaVersionError, match="newer major"):
        read_report(path)


@pytest.mark.slow
def test_run_model_tests_runs_pytest_in_a_child_and_returns_the_report(
    pytester: pytest.Pytester,
) -> None:
    from torchsmith.testing import run_model_tests

    path = pytester.makepyfile(test_suites=SUITES)
    report = run_model_tests(path, device="cpu", pytest_args=["-k", "TestTiny and forward"])
    (model,) = report.models
    assert model.model == "TestTiny" and [c.check for c in model.checks] == ["forward"]
    assert model.checks[0].outcome == "passed"


def test_run_model_tests_refuses_a_missing_path(pytester: pytest.Pytester) -> None:
    from torchsmith.interfaces import ConfigError
    from torchsmith.testing import run_model_tests

    with pytest.raises(ConfigError, match="no test file or folder at"):
        run_model_tests(pytester.path / "nope.py")
