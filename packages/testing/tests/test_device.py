"""best_device(): the documented order and the TORCHSMITH_DEVICE override."""

from __future__ import annotations

import pytest
import torch

from torchsmith.interfaces import ConfigError
from torchsmith.testing import DEVICE_ENV, best_device


def test_cpu_when_nothing_else_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert best_device() == torch.device("cpu")


def test_cuda_comes_before_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert best_device() == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert best_device() == torch.device("mps")


def test_the_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert best_device() == torch.device("cpu")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("bogus", "is not a torch device"), ("cuda:7", "cannot be used"), ("mps", "cannot be used")],
)
def test_a_bad_override_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setenv(DEVICE_ENV, value)
    with pytest.raises(ConfigError, match=f"{DEVICE_ENV}='{value}'.*{expected}"):
        best_device()
