"""torchsmith-testing's ModelTest suite on models written by torchsmith-generator.

Each family's preset is shrunk to its tiny config, generated without the generator's own
validation, and its test_model.py is run through ``run_model_tests``; the report must show
every check passed, except those that cannot run on this machine or are not offered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

generator = pytest.importorskip("torchsmith.generator")
testing = pytest.importorskip("torchsmith.testing")

FAMILY_PRESETS = {
    "gpt2": "gpt2",
    "bert": "bert-base-uncased",
    "llama": "smollm-135m",
    "t5": "t5-small",
    "vit": "vit-base-patch16-224",
    "clip": "clip-vit-base-patch32",
}
# Checks allowed to skip: no CUDA here; slow ones without --run-slow; checkpointing where
# the generated model does not offer it.
MAY_SKIP = {"device_move", "compile", "fresh_process", "gradient_checkpointing"}


def tiny_overrides(preset: str, name: str) -> dict[str, Any]:
    flat: dict[str, Any] = {"name": name}
    for key, value in generator.resolve_spec(preset).spec.tiny().items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


@pytest.mark.parametrize(
    "family",
    [f if f == "gpt2" else pytest.param(f, marks=pytest.mark.slow) for f in FAMILY_PRESETS],
)
def test_generated_model_passes_the_model_checks(family: str, tmp_path: Path) -> None:
    preset = FAMILY_PRESETS[family]
    out = tmp_path / family
    generator.generate(
        preset, out, overrides=tiny_overrides(preset, f"tiny-{family}"), validate=False
    )
    report = testing.run_model_tests(
        out / "test_model.py", device="cpu", report_path=tmp_path / "report.json"
    )
    (model,) = [m for m in report.models if m.kind == "model"]
    outcomes = {c.check: c.outcome for c in model.checks}
    assert set(outcomes) == set(testing.CHECK_METHODS)
    not_passed = {k: v for k, v in model.validation().items() if v != "passed"}
    assert set(not_passed) <= MAY_SKIP, not_passed
    assert all(v.startswith("skipped") for v in not_passed.values()), not_passed
    assert (tmp_path / "report.md").read_text().startswith("# torchsmith model checks")
