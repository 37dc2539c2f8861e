"""Errors the generator raises beyond the shared ones in torchsmith.interfaces.

TorchsmithError
 ├── ConfigError        an invalid spec, override or option (names the field)
 └── GenerationError    rendering, validation or writing the output failed
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torchsmith.interfaces import TorchsmithError

if TYPE_CHECKING:
    from torchsmith.interfaces import GeneratedArtifact


class GenerationError(TorchsmithError):
    """Generated code failed a check, or the output directory could not be written.

    ``artifact`` holds what was checked so far when validation failed.
    """

    def __init__(self, message: str, artifact: GeneratedArtifact | None = None) -> None:
        super().__init__(message)
        self.artifact = artifact
