"""torchsmith.generator

Jinja2 templates that emit runnable PyTorch model code, its tests and its benchmark.

    from torchsmith.generator import generate
    artifact = generate("gpt2", "out/gpt2", overrides=["n_layer=6"])
"""

from __future__ import annotations

from importlib.metadata import version as _version

from torchsmith.interfaces import require_interfaces

INTERFACES_MAJOR = 1
require_interfaces("torchsmith-generator", INTERFACES_MAJOR)

from ._errors import GenerationError  # noqa: E402
from ._generate import generate, list_backends, list_families, list_presets  # noqa: E402
from ._protocol import ModelCodeGenerator  # noqa: E402
from ._spec_loading import ResolvedSpec, resolve_spec  # noqa: E402
from ._specs import BertSpec, FamilySpec, GPT2Spec, LlamaSpec, T5Spec  # noqa: E402
from ._specs_vision import CLIPSpec, CLIPTextSpec, CLIPVisionSpec, ViTSpec  # noqa: E402

__version__ = _version("torchsmith-generator")

__all__ = [
    "INTERFACES_MAJOR",
    "__version__",
    # generating
    "generate",
    "list_families",
    "list_presets",
    "list_backends",
    "ModelCodeGenerator",
    "GenerationError",
    # specs
    "resolve_spec",
    "ResolvedSpec",
    "FamilySpec",
    "BertSpec",
    "GPT2Spec",
    "LlamaSpec",
    "T5Spec",
    "ViTSpec",
    "CLIPSpec",
    "CLIPTextSpec",
    "CLIPVisionSpec",
]
