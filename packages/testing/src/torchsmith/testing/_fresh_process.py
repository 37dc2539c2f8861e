"""The child side of the fresh-process check; run as ``python -m`` by _checks_saving.

    python -m torchsmith.testing._fresh_process TEST_FILE QUALNAME DEVICE DIRECTORY

imports the test class from TEST_FILE, builds its model (with a different seed), loads
DIRECTORY/model.safetensors into it, runs it on DIRECTORY/inputs.safetensors and writes
the main output to DIRECTORY/output.safetensors.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file

from ._harness import OTHER_INIT_SEED_OFFSET, build_model, main_output
from ._model_test import ModelTest


def load_test_class(source: Path, qualname: str) -> type[ModelTest]:
    spec = importlib.util.spec_from_file_location(f"_torchsmith_fresh_{source.stem}", source)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {source}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    found: object = module
    for part in qualname.split("."):
        found = getattr(found, part)
    if not (isinstance(found, type) and issubclass(found, ModelTest)):
        raise SystemExit(f"{qualname} in {source} is not a ModelTest subclass")
    return found


def main(argv: list[str]) -> int:
    source, qualname, device_name, directory = argv
    folder = Path(directory)
    test = load_test_class(Path(source), qualname)()
    device = torch.device(device_name)
    model = build_model(test, device, seed_offset=OTHER_INIT_SEED_OFFSET).eval()
    load_model(model, str(folder / "model.safetensors"), strict=True, device=str(device))
    inputs = {k: v.to(device) for k, v in load_file(str(folder / "inputs.safetensors")).items()}
    output = main_output(test, model, inputs).detach().cpu().contiguous()
    save_file({"output": output}, str(folder / "output.safetensors"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
