import pytest

import torchsmith.interfaces as ti
from torchsmith.interfaces import _version


def test_version_is_semver() -> None:
    major, minor, patch = ti.parse_version(ti.INTERFACES_VERSION)
    assert major == 1
    assert minor >= 0 and patch >= 0


@pytest.mark.parametrize("bad", ["1", "1.x", "a.b.c", "1.2.3.4", ""])
def test_parse_version_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValueError, match=r"MAJOR\.MINOR"):
        ti.parse_version(bad)


@pytest.mark.parametrize("installed", ["1.0.0", "1.3.0", "1.17.2"])
def test_same_major_is_accepted(monkeypatch: pytest.MonkeyPatch, installed: str) -> None:
    monkeypatch.setattr(_version, "INTERFACES_VERSION", installed)
    ti.require_interfaces("torchsmith-losses", 1)  # does not raise


def test_other_major_is_refused_naming_both_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_version, "INTERFACES_VERSION", "2.0.0")
    with pytest.raises(ti.InterfacesVersionError) as info:
        ti.require_interfaces("torchsmith-losses", 1)
    message = str(info.value)
    assert "torchsmith-losses" in message
    assert "1.x" in message and "2.0.0" in message
    assert isinstance(info.value, ti.TorchsmithError)


def test_error_tree() -> None:
    for error in (
        ti.ConfigError,
        ti.DataError,
        ti.CheckpointError,
        ti.SchemaVersionError,
        ti.InterfacesVersionError,
        ti.RegistryError,
        ti.MissingSuiteError,
    ):
        assert issubclass(error, ti.TorchsmithError)
    assert issubclass(ti.ConfigError, ValueError)
    assert str(ti.RegistryError("no loss 'x'")) == "no loss 'x'"
