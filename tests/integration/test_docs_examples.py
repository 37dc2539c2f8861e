"""docs/trainer.md against the code: the own-loop example runs as printed and resumes
exactly; the config reference lists the defaults the code has."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

pytest.importorskip("torchsmith.trainer")

DOC = Path(__file__).resolve().parents[2] / "docs" / "trainer.md"


def _own_loop() -> str:
    section = DOC.read_text().split("## Your own loop from the parts", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "docs/trainer.md: the own-loop section lost its example"
    return found.group(1)


def _run(code: str, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run ``code`` as a script in ``cwd``, in this process (a fresh interpreter would
    spend seconds importing torch); what it prints."""
    monkeypatch.chdir(cwd)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(DOC), "exec"), {"__name__": "__main__"})
    return printed.getvalue()


def test_the_own_loop_example_learns_and_resumes_bitwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = _own_loop()
    assert "STEPS = 300" in code
    whole, split = tmp_path / "whole", tmp_path / "split"
    whole.mkdir(), split.mkdir()
    printed = _run(code, whole, monkeypatch).splitlines()
    last = {k: float(v) for k, v in re.findall(r"'(val_\w+)': ([\d.]+)", printed[-1])}
    assert printed[-1].startswith("300 ") and last["val_accuracy"] >= 0.9
    _run(code.replace("STEPS = 300", "STEPS = 150"), split, monkeypatch)  # stopped at 150
    resumed = _run(code, split, monkeypatch).splitlines()  # run again: resumes from 150
    assert [line.split()[0] for line in resumed] == ["200", "250", "300"]
    model = Path("runs/own/checkpoints/latest/model.safetensors")
    assert (whole / model).read_bytes() == (split / model).read_bytes()


def test_the_config_reference_lists_the_defaults() -> None:
    import yaml

    from torchsmith.trainer import ExperimentConfig

    section = DOC.read_text().split("## Config reference (defaults)", 1)[1]
    found = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert found, "docs/trainer.md: the config reference lost its defaults"
    assert yaml.safe_load(found.group(1)) == ExperimentConfig().model_dump(mode="json")
