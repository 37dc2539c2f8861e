"""Collects ModelTest and LossTest outcomes during a pytest run and writes the report."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import torch

from torchsmith.interfaces import TorchsmithError

from ._device import best_device
from ._hardware import cached_hardware
from ._loss_test import LOSS_CHECK_OF_METHOD, LossTest
from ._model_test import CHECK_OF_METHOD, ModelTest
from ._report import CheckResult, ModelReport, Outcome, SuiteReport, write_report

_MESSAGE_LIMIT = 2000
_PROPERTY = "torchsmith_check"
_FAILED = ("failed", "error")


class ReportCollector:
    """A pytest plugin object: one ModelReport per test class, one CheckResult per item.

    Where the item runs, makereport tags its reports with what the check is (user
    properties travel with a report, to the controller too under pytest-xdist); where
    reports arrive, logreport files them; only a process that is not a worker writes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.models: dict[str, ModelReport] = {}
        self.written: tuple[Path, Path] | None = None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        cls = getattr(item, "cls", None)
        if isinstance(cls, type) and issubclass(cls, ModelTest | LossTest):
            report.user_properties.append((_PROPERTY, _describe(item, cls)))
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        described = dict(report.user_properties).get(_PROPERTY)
        outcome = _outcome(report)
        if not isinstance(described, dict) or outcome is None:
            return
        key = f"{described['nodeid']}@{described['device']}"
        model = self.models.setdefault(
            key,
            ModelReport(
                model=described["model"],
                nodeid=described["nodeid"],
                kind=described["kind"],
                device=described["device"],
            ),
        )
        result = CheckResult(
            check=described["check"],
            outcome=outcome,
            message=_message(report, outcome),
            duration_s=report.duration,
        )
        existing = next((c for c in model.checks if c.check == result.check), None)
        if existing is None:
            model.checks.append(result)
        elif outcome in _FAILED and existing.outcome not in _FAILED:
            model.checks[model.checks.index(existing)] = result  # a teardown error wins

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(session.config, "workerinput"):
            return  # an xdist worker: the controller writes the report
        report = SuiteReport(hardware=cached_hardware(), models=list(self.models.values()))
        self.written = write_report(report, self.path)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.written is not None:
            json_path, md_path = self.written
            terminalreporter.write_line(f"torchsmith report: {json_path} and {md_path}")


def _describe(item: pytest.Item, cls: type) -> dict[str, str]:
    """What the report needs to know about an item: model, node id, kind, device, check."""
    is_model = issubclass(cls, ModelTest)
    method = getattr(item, "originalname", item.name)
    names = CHECK_OF_METHOD if is_model else LOSS_CHECK_OF_METHOD
    return {
        "model": cls.__name__,
        "nodeid": item.nodeid.rsplit("::", 1)[0],
        "kind": "model" if is_model else "loss",
        "device": _device_of(item),
        "check": names.get(method, method.removeprefix("test_")),
    }


def _outcome(report: pytest.TestReport) -> Outcome | None:
    """The check outcome this phase decides, or None when the phase adds nothing."""
    if report.when == "call":
        return "passed" if report.passed else "skipped" if report.skipped else "failed"
    if report.skipped:
        return "skipped"
    if report.failed:
        return "error"
    return None


def _message(report: pytest.TestReport, outcome: Outcome) -> str | None:
    if outcome == "passed":
        return None
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (file, line, reason)
        return str(longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    text = getattr(crash, "message", None) or str(longrepr)
    return text[:_MESSAGE_LIMIT]


def _device_of(item: pytest.Item) -> str:
    funcargs = getattr(item, "funcargs", {})
    value = funcargs.get("device")
    if isinstance(value, torch.device | str):
        return str(value)
    try:
        return str(best_device())
    except TorchsmithError:
        return "unknown"
