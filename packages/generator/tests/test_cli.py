"""`torchsmith generate` through its entry point function."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from torchsmith.generator._cli import main


def test_list_shows_families_presets_and_backends(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for word in ("gpt2", "t5-small", "smollm-135m", "124.4M", "cuda", "dual encoder"):
        assert word in out


def test_generate_with_overrides_and_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["bert-base-uncased", "--out", str(tmp_path / "b"), "--set", "num_hidden_layers=1"]
    assert main([*args, "--checks", "parse,import", "--backend", "mps"]) == 0
    out = capsys.readouterr().out
    assert "check parse" in out and "check forward     skipped" in out
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["num_hidden_layers"] == 1
    assert config["model_type"] == "bert"
    assert main([*args, "--no-validate"]) == 2  # exists: needs --force
    assert "--force" in capsys.readouterr().err
    assert main([*args, "--no-validate", "--force"]) == 0


def test_errors_exit_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gpt2", "--out", str(tmp_path), "--set", "n_head=7"]) == 2
    assert "n_head=7 must divide n_embd=768" in capsys.readouterr().err
    assert main(["gpt2"]) == 2
    with pytest.raises(SystemExit):
        main(["gpt2", "--out", str(tmp_path), "--backend", "tpu"])


@pytest.mark.parametrize(
    ("extra", "words"),
    [(["--checks", "parse", "--no-validate"], "with --no-validate"),
     (["--checks", ","], "naming no check")],
)  # fmt: skip
def test_checks_that_would_run_nothing_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], words: str
) -> None:
    """Both used to run no check at all: one ignored --checks, the other read as 'off'."""
    assert main(["gpt2", "--out", str(tmp_path / "o"), *extra]) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_entry_point_is_registered() -> None:
    from importlib.metadata import entry_points

    commands = {ep.name: ep.value for ep in entry_points(group="torchsmith.commands")}
    assert commands["generate"] == "torchsmith.generator._cli:main"
