"""Registered models: ModelTest suites that installed packages expose by entry point.

A package registers a ModelTest subclass, or a module of them, under a name::

    [project.entry-points."torchsmith.models"]
    my-mlp = "my_pkg.tests_models:TestMyMLP"

A request names a registered model by that name only; the dotted path behind it
comes from the installed package's metadata, never from the request, so a request
cannot make the server import code of its choosing. Listing and looking names up
read metadata only; the model's code is imported in the job's own process.
"""

from __future__ import annotations

import json
import logging
import re
import types
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from torchsmith.interfaces import ConfigError, RegistryError

log = logging.getLogger(__name__)

GROUP = "torchsmith.models"
# What a request may name: no dots, slashes or colons, so never a module or file path.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,99}$"
_NAME = re.compile(NAME_PATTERN)
TEST_FILE = "test_registered_model.py"


@dataclass(frozen=True)
class RegisteredModel:
    """One entry point of the group: its name, what it points at, who provides it."""

    name: str
    target: str
    distribution: str | None
    version: str | None


class UnknownModelError(RegistryError):
    """No registered model has this name (the message lists the registered ones)."""


def model_entry_points() -> list[metadata.EntryPoint]:
    """Every entry point of the ``torchsmith.models`` group, in sys.path order."""
    return list(metadata.entry_points(group=GROUP))


def registered_models() -> dict[str, RegisteredModel]:
    """Name -> RegisteredModel; a name two distributions register goes to the first found."""
    found: dict[str, RegisteredModel] = {}
    for entry in model_entry_points():
        dist = entry.dist
        model = RegisteredModel(
            name=entry.name,
            target=entry.value,
            distribution=dist.name if dist is not None else None,
            version=dist.version if dist is not None else None,
        )
        if not _NAME.fullmatch(entry.name):
            log.warning(
                "ignoring registered model %r from %s: names must match %s",
                entry.name,
                model.distribution,
                NAME_PATTERN,
            )
        elif entry.name in found:
            log.warning(
                "registered model %r of %s is hidden by the one of %s",
                entry.name,
                model.distribution,
                found[entry.name].distribution,
            )
        else:
            found[entry.name] = model
    return dict(sorted(found.items()))


def find_model(name: str) -> RegisteredModel:
    """The registered model called ``name``, or UnknownModelError listing the registered ones."""
    models = registered_models()
    if name not in models:
        known = ", ".join(models) or f"none: no installed package has {GROUP} entry points"
        raise UnknownModelError(f"no registered model {name!r}; registered models: {known}")
    return models[name]


def registered_test_classes(name: str) -> dict[str, type]:
    """Load the entry point ``name`` (in a job process): its ModelTest classes by name.

    A class entry point gives itself; a module gives every ModelTest subclass in it whose
    name starts with ``Test`` (pytest's rule for collecting a class).
    """
    from torchsmith.testing import ModelTest

    model = find_model(name)
    entry = next(e for e in model_entry_points() if e.name == name and e.value == model.target)
    loaded: Any = entry.load()
    if isinstance(loaded, type) and issubclass(loaded, ModelTest) and loaded is not ModelTest:
        return {_collectable(loaded.__name__): loaded}
    if isinstance(loaded, types.ModuleType):
        classes = {
            attr: value
            for attr, value in vars(loaded).items()
            if attr.startswith("Test")
            and isinstance(value, type)
            and issubclass(value, ModelTest)
            and value is not ModelTest
        }
        if classes:
            return classes
    raise ConfigError(
        f"registered model {name!r} ({model.target}, from {model.distribution}) is neither "
        "a ModelTest subclass nor a module with ModelTest subclasses named Test*"
    )


def write_test_file(directory: Path, name: str) -> Path:
    """A pytest file in ``directory`` that collects the registered model's ModelTest classes."""
    if not _NAME.fullmatch(name):  # match() takes a trailing newline ($)
        raise ConfigError(f"registered model name {name!r} does not match {NAME_PATTERN}")
    path = directory / TEST_FILE
    path.write_text(
        f'"""The ModelTest classes of the registered model {name} ({GROUP})."""\n\n'
        "from torchsmith.api._registered import registered_test_classes\n\n"
        f"globals().update(registered_test_classes({json.dumps(name)}))\n",
        encoding="utf-8",
    )
    return path


def _collectable(name: str) -> str:
    return name if name.startswith("Test") else f"Test{name}"
