"""The check report: which checks passed per model and device, as JSON and markdown.

The records subclass ``torchsmith.interfaces.Record``, so the JSON carries a
``schema_version`` and readers refuse a newer major.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from torchsmith.interfaces import CheckpointError, HardwareInfo, Record, atomic_write

Outcome = Literal["passed", "failed", "skipped", "error"]
_SYMBOL = {"passed": "pass", "failed": "FAIL", "skipped": "skip", "error": "ERROR"}


class CheckResult(Record):
    """One check of one model: its outcome, and the failure or skip message."""

    check: str
    outcome: Outcome
    message: str | None = None
    duration_s: float = 0.0


class ModelReport(Record):
    """Every check run on one ModelTest or LossTest class, on one device."""

    model: str = Field(description="The test class name, e.g. TestTinyGPT.")
    nodeid: str = Field(description="The pytest node id of the class.")
    kind: Literal["model", "loss"] = "model"
    device: str
    checks: list[CheckResult] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when no check failed or errored (skips allowed)."""
        return all(c.outcome in ("passed", "skipped") for c in self.checks)

    def validation(self) -> dict[str, str]:
        """check -> 'passed', 'skipped: why' or the failure, as GeneratedArtifact.validation."""
        out = {}
        for c in self.checks:
            if c.outcome == "passed":
                out[c.check] = "passed"
            else:
                out[c.check] = f"{c.outcome}: {c.message or ''}".rstrip(": ")
        return out


class SuiteReport(Record):
    """A pytest run's ModelTest and LossTest results, with the hardware they ran on."""

    created: float = Field(default_factory=time.time, description="Unix time, seconds.")
    hardware: HardwareInfo | None = None
    models: list[ModelReport] = Field(default_factory=list)

    def counts(self) -> dict[str, int]:
        totals = dict.fromkeys(_SYMBOL, 0)
        for model in self.models:
            for check in model.checks:
                totals[check.outcome] += 1
        return totals

    def markdown(self) -> str:
        """A short summary: one row per model and device, one column per outcome."""
        counts = self.counts()
        lines = [
            "# torchsmith model checks",
            "",
            ", ".join(f"{n} {outcome}" for outcome, n in counts.items()),
            "",
            "| model | device | passed | failed | skipped | failing checks |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for m in self.models:
            by = {o: [c.check for c in m.checks if c.outcome == o] for o in _SYMBOL}
            failing = ", ".join(by["failed"] + by["error"]) or "-"
            lines.append(
                f"| {m.model} | {m.device} | {len(by['passed'])} | "
                f"{len(by['failed']) + len(by['error'])} | {len(by['skipped'])} | {failing} |"
            )
        failures = [(m, c) for m in self.models for c in m.checks if c.outcome in _FAILED]
        if failures:
            lines += ["", "## Failures", ""]
            for m, c in failures:
                text = " ".join(line.strip() for line in (c.message or c.outcome).splitlines())
                lines.append(f"- **{m.model}.{c.check}**: {text[:300]}")
        return "\n".join(lines) + "\n"


_FAILED = ("failed", "error")


def read_report(path: str | os.PathLike[str]) -> SuiteReport:
    """Load a report written by ``--torchsmith-report``; a newer major is refused."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise CheckpointError(f"cannot read the torchsmith report {file}: {exc}") from exc
    return SuiteReport.read(text)


def write_report(report: SuiteReport, path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``path`` (JSON) and the same name with .md (markdown), each atomically."""
    json_path = Path(path).resolve()
    md_path = json_path.with_suffix(".md")
    atomic_write(json_path, report.model_dump_json(indent=2))
    atomic_write(md_path, report.markdown())
    return json_path, md_path
