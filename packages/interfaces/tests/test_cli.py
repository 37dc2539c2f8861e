import subprocess
import sys
from importlib import metadata

import pytest

from torchsmith.interfaces import _cli


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "torchsmith.interfaces._cli", *args],
        capture_output=True,
        text=True,
    )


def test_version_lists_interfaces() -> None:
    out = run("--version")
    assert out.returncode == 0
    assert "torchsmith interfaces 1." in out.stdout
    assert "torchsmith-interfaces" in out.stdout


def test_help_lists_commands() -> None:
    out = run("--help")
    assert out.returncode == 0
    for name in _cli.KNOWN_COMMANDS:
        assert name in out.stdout


def test_no_command_is_an_error_that_shows_the_commands() -> None:
    out = run()
    assert out.returncode == 2 and out.stdout == ""
    assert all(name in out.stderr for name in _cli.KNOWN_COMMANDS)


def test_missing_suite_gives_install_hint_without_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_cli, "installed_commands", dict)
    code = _cli.main(["serve"])
    err = capsys.readouterr().err
    assert code == 2
    assert "pip install torchsmith-api" in err
    assert "Traceback" not in err


def test_unknown_command_lists_known(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_cli, "installed_commands", dict)
    assert _cli.main(["frobnicate"]) == 2
    assert "train" in capsys.readouterr().err


def test_dispatches_to_registered_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 7

    entry = metadata.EntryPoint(name="train", value="x:y", group=_cli.ENTRY_POINT_GROUP)
    monkeypatch.setattr(_cli, "installed_commands", lambda: {"train": entry})
    monkeypatch.setattr(metadata.EntryPoint, "load", lambda self: fake_main)
    assert _cli.main(["train", "recipe.toml", "--set", "a=1"]) == 7
    assert seen == [["recipe.toml", "--set", "a=1"]]


def test_command_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from torchsmith.interfaces import ConfigError

    def failing(argv: list[str]) -> int:
        raise ConfigError("optim.lr: must be > 0")

    entry = metadata.EntryPoint(name="train", value="x:y", group=_cli.ENTRY_POINT_GROUP)
    monkeypatch.setattr(_cli, "installed_commands", lambda: {"train": entry})
    monkeypatch.setattr(metadata.EntryPoint, "load", lambda self: failing)
    assert _cli.main(["train"]) == 2
    assert "optim.lr: must be > 0" in capsys.readouterr().err
