"""Prove each generated file runs before it is handed over.

Checks, in order (each records "passed", "skipped: why" or stops with the error):

    parse       every .py file compiles
    lint        ruff check is clean (skipped when ruff is not installed)
    import      model.py imports
    forward     a tiny config builds and its forward gives a finite output of the right shape
    parameters  the full config's parameter count (meta device) equals the analytic count
    tests       pytest runs test_model.py (needs torchsmith-testing)
    bench       bench_model.py imports and its case runs once (needs torchsmith-bench)

A failure names the generated file, its line and the template it came from.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from torchsmith.interfaces import ConfigError

from ._specs import FamilySpec

CHECKS = ("parse", "lint", "import", "forward", "parameters", "tests", "bench")
LINT_RULES = "E,F,W,I,B,UP,SIM"
SUBPROCESS_TIMEOUT_S = 600


class CheckFailed(Exception):
    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check} check failed: {message}")
        self.check = check
        self.detail = message


class Validator:
    """Runs the checks on a staged directory; ``results`` fills in as they pass."""

    def __init__(
        self,
        directory: Path,
        spec: FamilySpec,
        templates: dict[str, str],
        checks: Collection[str] = CHECKS,
        sources: Callable[[str], str] | None = None,
    ) -> None:
        unknown = sorted(set(checks) - set(CHECKS))
        if unknown:
            raise ConfigError(f"unknown checks {unknown}; allowed: {', '.join(CHECKS)}")
        self.checks = set(checks)
        self.directory = directory
        self.spec = spec
        self.templates = templates  # output file -> template it was rendered from
        self.sources = sources  # template name -> its source, to find a line's origin
        self.results: dict[str, str] = {}
        self._module: ModuleType | None = None

    def run(self) -> dict[str, str]:
        steps: dict[str, Callable[[], str]] = {
            "parse": self.parse,
            "lint": self.lint,
            "import": self.import_model,
            "forward": self.forward,
            "parameters": self.parameters,
            "tests": self.tests,
            "bench": self.bench,
        }
        try:
            for name, step in steps.items():
                if name not in self.checks:
                    self.results[name] = "skipped: not requested"
                    continue
                if name in ("forward", "parameters", "bench") and self._module is None:
                    self.import_model()  # they need the module even when import was not asked
                start = time.perf_counter()
                try:
                    result = step()
                except CheckFailed:
                    raise
                except Exception as exc:
                    raise CheckFailed(name, self.locate(exc)) from exc
                elapsed = time.perf_counter() - start
                timed = not result.startswith("skipped")
                self.results[name] = f"{result} [{elapsed:.2f} s]" if timed else result
        finally:
            if self._module is not None:
                sys.modules.pop(self._module.__name__, None)
        return self.results

    # ------------------------------------------------------------------ checks

    def parse(self) -> str:
        for path in sorted(self.directory.glob("*.py")):
            try:
                ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            except SyntaxError as exc:
                where = self.where(path.name, exc.lineno or 0)
                raise CheckFailed("parse", f"{where}: {exc.msg}") from None
        return "passed"

    def lint(self) -> str:
        ruff = find_ruff()
        if ruff is None:
            return "skipped: ruff is not installed (pip install 'torchsmith-generator[lint]')"
        files = [str(path) for path in sorted(self.directory.glob("*.py"))]
        command = [ruff, "check", "--isolated", "--no-cache", "--select", LINT_RULES]
        command += ["--line-length", "100", "--output-format", "concise", *files]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise CheckFailed("lint", self.annotate(result.stdout + result.stderr))
        return "passed"

    def import_model(self) -> str:
        name = f"_torchsmith_generated_{uuid.uuid4().hex}"
        spec = importlib.util.spec_from_file_location(name, self.directory / "model.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        self._module = module
        with _no_bytecode():
            spec.loader.exec_module(module)
        for attribute in ("build_model", "example_inputs", "load_weights"):
            if not callable(getattr(module, attribute, None)):
                raise CheckFailed("import", f"model.py defines no function {attribute}()")
        return "passed"

    def forward(self) -> str:
        module = self._loaded()
        tiny = self.spec.shrunk()
        config = tiny.config_json()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a missing backend device falls back to the CPU
            device = module.default_device()
        torch.manual_seed(0)
        model = module.build_model(config, device=device)
        inputs = module.example_inputs(config, 2, device=device)
        with torch.no_grad():
            output = model(**inputs)
        if not isinstance(output, torch.Tensor):
            raise CheckFailed("forward", f"forward returned {type(output).__name__}, not a tensor")
        expected = tiny.output_shape({key: tuple(value.shape) for key, value in inputs.items()})
        if tuple(output.shape) != expected:
            raise CheckFailed("forward", f"output shape {tuple(output.shape)} != {expected}")
        if not torch.isfinite(output).all():
            raise CheckFailed("forward", "the output has NaN or infinite values")
        return f"passed ({device.type}, output {tuple(output.shape)})"

    def parameters(self) -> str:
        model = self._loaded().build_model(device="meta")  # full size, no memory used
        counted = sum(p.numel() for p in model.parameters())
        expected = self.spec.num_parameters()
        if counted != expected:
            raise CheckFailed("parameters", f"model has {counted:,}, analytic count {expected:,}")
        return f"passed ({counted:,})"

    def tests(self) -> str:
        if not _exports("torchsmith.testing", "ModelTest"):
            return "skipped: torchsmith-testing is not installed (pip install torchsmith-testing)"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        command += ["--rootdir", str(self.directory), "--confcutdir", str(self.directory)]
        command += ["--import-mode=importlib", "test_model.py"]
        self._subprocess("tests", command)
        return "passed"

    def bench(self) -> str:
        if not _exports("torchsmith.bench", "benchmark"):
            return "skipped: torchsmith-bench is not installed (pip install torchsmith-bench)"
        if (too_big := self._too_big_to_build()) is not None:
            return f"skipped: {too_big}"
        self._subprocess("bench", [sys.executable, "-c", BENCH_SMOKE, "bench_model.py"])
        return "passed (batch_size=1, one call)"

    # ------------------------------------------------------------------ helpers

    def _too_big_to_build(self) -> str | None:
        """Why the bench check should not build the full-size model here, or None: its
        weights alone would take over half the memory free on the device the bench file
        builds it on (a 7B Llama's are 27 GB in float32). ``build_model`` makes them in
        float32 and then casts, so a bf16 or fp16 model briefly holds both copies."""
        module = self._loaded()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a missing backend device falls back to the CPU
            device = module.default_device()
        dtype = module.DTYPE if device.type == module.DEVICE else torch.float32
        per_parameter = 4 if dtype == torch.float32 else 4 + dtype.itemsize
        need = self.spec.num_parameters() * per_parameter
        free = free_memory(device)
        if free is None or need <= free / 2:
            return None
        return (
            f"building the full-size model takes {need / 2**30:.1f} GiB, over half the "
            f"{free / 2**30:.1f} GiB free on {device.type}; run bench_model.py where it fits"
        )

    def _loaded(self) -> Any:
        assert self._module is not None, "import check runs first"
        return self._module

    def _subprocess(self, check: str, command: list[str]) -> None:
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        result = subprocess.run(
            command,
            cwd=self.directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-30:])
            raise CheckFailed(check, self.annotate(tail))

    def where(self, filename: str, line: int) -> str:
        text = self._line(filename, line)
        quoted = f" `{text}`" if text else ""
        return f"{filename} line {line} ({self.template_of(filename, line)}){quoted}"

    def template_of(self, filename: str, line: int) -> str:
        """The template a generated line came from, with its line when the text is unique."""
        template = self.templates.get(filename)
        if template is None:
            return "template ?"
        text = self._line(filename, line)
        if self.sources is not None and text:
            source = self.sources(template)
            for name in [template, *re.findall(r'{%-?\s*import\s+"([^"]+)"', source)]:
                lines = self.sources(name).splitlines()
                found = [number for number, line_ in enumerate(lines, 1) if line_.strip() == text]
                if len(found) == 1:
                    return f"template {name} line {found[0]}"
        return f"template {template}"

    def _line(self, filename: str, line: int) -> str:
        path = self.directory / filename
        if not path.is_file() or line < 1:
            return ""
        lines = path.read_text(encoding="utf-8").splitlines()
        return lines[line - 1].strip() if line <= len(lines) else ""

    def locate(self, exc: BaseException) -> str:
        """The exception, with the deepest generated file and line it passed through."""
        frames = [
            frame
            for frame in traceback.extract_tb(exc.__traceback__)
            if Path(frame.filename).parent == self.directory
        ]
        message = f"{type(exc).__name__}: {exc}"
        if frames:
            frame = frames[-1]
            return f"{self.where(Path(frame.filename).name, frame.lineno or 0)}: {message}"
        return message

    def annotate(self, output: str) -> str:
        """Add the template name after each generated file named in tool output."""

        def name_template(match: re.Match[str]) -> str:
            filename, line = match.group(1), int(match.group(2) or match.group(3))
            return f"{match.group(0)} [{self.template_of(filename, line)}]"

        pattern = re.escape(str(self.directory)) + r"/(\w+\.py)(?::(\d+):\d+|\", line (\d+))"
        return re.sub(pattern, name_template, output)


# Run by `python -c` in the output directory: import the bench file, set its case up for
# batch_size=1 and call what it returns once.
BENCH_SMOKE = """
import runpy, sys
namespace = runpy.run_path(sys.argv[1])
case = namespace["case"]
setup = getattr(case, "setup", None)
run = setup(batch_size=1) if callable(setup) else case(batch_size=1)
run()
"""


def free_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device``, or None where that is not known (MPS, and a
    CPU without /proc/meminfo or sysconf's available pages: the bench check then runs)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def find_ruff() -> str | None:
    try:
        from ruff.__main__ import find_ruff_bin

        return str(find_ruff_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("ruff")


def _exports(module: str, attribute: str) -> bool:
    try:
        return hasattr(importlib.import_module(module), attribute)
    except ImportError:
        return False


@contextmanager
def _no_bytecode() -> Iterator[None]:
    previous = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        yield
    finally:
        sys.dont_write_bytecode = previous
