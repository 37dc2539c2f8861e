"""The own-loop example of docs/trainer.md runs as printed, and resumes exactly."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torchsmith.trainer")

DOC = Path(__file__).resolve().parents[2] / "docs" / "trainer.md"


def _own_loop() -> str:
    section = DOC.read_text().split("## Your own loop from the parts", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "docs/trainer.md: the own-loop section lost its example"
    return found.group(1)


def _run(code: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_own_loop_example_learns_and_resumes_bitwise(tmp_path: Path) -> None:
    code = _own_loop()
    assert "STEPS = 300" in code
    whole, split = tmp_path / "whole", tmp_path / "split"
    whole.mkdir(), split.mkdir()
    printed = _run(code, whole).splitlines()
    last = {k: float(v) for k, v in re.findall(r"'(val_\w+)': ([\d.]+)", printed[-1])}
    assert printed[-1].startswith("300 ") and last["val_accuracy"] >= 0.9
    _run(code.replace("STEPS = 300", "STEPS = 150"), split)  # stopped at step 150
    resumed = _run(code, split).splitlines()  # run again: resumes from step 150
    assert [line.split()[0] for line in resumed] == ["200", "250", "300"]
    model = Path("runs/own/checkpoints/latest/model.safetensors")
    assert (whole / model).read_bytes() == (split / model).read_bytes()
