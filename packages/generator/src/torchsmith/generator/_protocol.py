"""The generator as a torchsmith.interfaces.ModelGenerator, for code that takes the Protocol."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torchsmith.interfaces import GeneratedArtifact

from ._generate import generate, list_families


class ModelCodeGenerator:
    """Satisfies ModelGenerator; options beyond the Protocol's are fixed at construction."""

    def __init__(self, *, force: bool = False, validate: bool = True) -> None:
        self.force = force
        self.validate = validate

    def families(self) -> list[str]:
        return list_families()

    def generate(
        self, spec: Mapping[str, Any], out_dir: Path, *, backend: str = "cpu"
    ) -> GeneratedArtifact:
        return generate(spec, out_dir, backend=backend, force=self.force, validate=self.validate)
