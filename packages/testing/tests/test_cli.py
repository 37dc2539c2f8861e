"""torchsmith doctor: the table, --json, and the features it reports."""

from __future__ import annotations

import json
from importlib.metadata import entry_points

import pytest

from torchsmith.interfaces import HardwareInfo
from torchsmith.testing import _cli
from torchsmith.testing._cli import features, main


def test_doctor_is_registered_as_a_torchsmith_command() -> None:
    (entry,) = [ep for ep in entry_points(group="torchsmith.commands") if ep.name == "doctor"]
    assert entry.load() is main


def test_plugin_is_registered_for_pytest() -> None:
    names = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert names["torchsmith"] == "torchsmith.testing.plugin"


def test_json_output_is_a_hardware_record_plus_features(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    info = HardwareInfo.read(payload["hardware"])
    assert payload["best_device"] in ("cpu", "cuda:0", "mps")
    by_name = {f["name"]: f for f in payload["features"]}
    assert by_name["torchsmith doctor (torchsmith-testing)"]["available"] is True
    compile_check = by_name["torch.compile check"]
    assert compile_check["available"] == info.capabilities["compile"]
    for feature in payload["features"]:
        assert feature["available"] or feature["reason"], feature


def test_table_lists_machine_capabilities_and_features(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    text = capsys.readouterr().out
    for heading in ("torchsmith doctor", "  CPU ", "  torch ", "capabilities", "features"):
        assert heading in text
    assert "  yes  torchsmith doctor (torchsmith-testing)" in text


def test_missing_suites_say_how_to_install_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cli, "installed_commands", lambda: {})
    found = {f.name: f for f in features(_cli.detect_hardware())}
    train = found["torchsmith train (torchsmith-trainer)"]
    assert not train.available and train.reason == "not installed: pip install torchsmith-trainer"


def test_an_invalid_device_override_is_reported_not_raised(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TORCHSMITH_DEVICE", "cuda:9")
    assert main([]) == 0
    assert "best device  invalid override: TORCHSMITH_DEVICE='cuda:9'" in capsys.readouterr().out


@pytest.mark.slow
def test_probe_compiles_a_function(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "--probe"]) == 0
    payload = json.loads(capsys.readouterr().out)
    if payload["hardware"]["capabilities"]["compile"]:
        assert payload["compile_probe_s"] > 0
    else:
        assert "compile" in payload["hardware"]["reasons"]
