"""Shared helpers: generate a spec into a temporary directory and import its model.py."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from torchsmith.generator import generate

GenerateFn = Callable[..., tuple[Path, ModuleType]]


def import_generated(directory: Path) -> ModuleType:
    name = f"generated_under_test_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, directory / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def import_model() -> Callable[[Path], ModuleType]:
    """import_model(directory) -> the generated model.py there, freshly imported."""
    return import_generated


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> GenerateFn:
    """generated(spec, overrides) -> (directory, imported model.py), cached per session."""
    cache: dict[str, tuple[Path, ModuleType]] = {}

    def make(spec: Any, overrides: Any = (), backend: str = "cpu") -> tuple[Path, ModuleType]:
        key = repr((spec, overrides, backend))
        if key not in cache:
            out = tmp_path_factory.mktemp("generated") / "model"
            generate(spec, out, overrides=overrides, backend=backend, validate=False)
            cache[key] = (out, import_generated(out))
        return cache[key]

    return make
