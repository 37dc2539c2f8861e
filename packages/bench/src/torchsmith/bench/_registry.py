"""Benchmark cases: the ``@benchmark`` decorator, the registry, and discovery.

A case is a function ``case(**params) -> Callable[[], object]``: it does the untimed setup
and returns the callable to time. ``@benchmark`` registers it under a name with the values
each parameter takes; the runner times every combination. Cases are found by importing
benchmark files (``bench_*.py`` under a directory) or the modules that installed suites
list in the ``torchsmith.benchmarks`` entry-point group.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import importlib
import importlib.util
import itertools
import json
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from torchsmith.interfaces import ConfigError, RegistryError, TorchsmithError

Scalar = str | int | float | bool | None
Params = dict[str, Scalar]
SetupFn = Callable[..., Callable[[], object]]

ENTRY_POINT_GROUP = "torchsmith.benchmarks"


@dataclass(frozen=True)
class Case:
    """A registered benchmark case; satisfies ``torchsmith.interfaces.BenchmarkCase``.

    The callable ``fn`` returns may have an ``extra()`` method returning ``{name: number}``
    (e.g. a data-wait fraction); the runner stores those numbers with the result.

    ``items`` names the parameter (or gives the number) of items one call processes, so
    throughput can be reported; by default a ``batch_size`` parameter is used when present.
    """

    name: str
    fn: SetupFn
    params: Mapping[str, list[Scalar]] = field(default_factory=dict)
    baseline: str | None = None
    items: str | int | None = None
    source: str = ""

    def setup(self, **params: Any) -> Callable[[], object]:
        timed = self.fn(**params)
        if not callable(timed):
            raise ConfigError(
                f"benchmark {self.name!r}: its function must return the callable to time, "
                f"got {type(timed).__name__}"
            )
        return timed

    def variants(self) -> list[Params]:
        """Every combination of the parameter values, in declaration order."""
        names = list(self.params)
        return [dict(zip(names, values, strict=True)) for values in _product(self.params)]

    def items_per_call(self, params: Mapping[str, Scalar]) -> float | None:
        key = self.items if self.items is not None else "batch_size"
        if isinstance(key, int):
            return float(key)
        value = params.get(key)
        return float(value) if isinstance(value, int | float) and value > 0 else None


def _product(params: Mapping[str, list[Scalar]]) -> Iterable[tuple[Scalar, ...]]:
    return itertools.product(*params.values())


def case_key(name: str, params: Mapping[str, Scalar]) -> str:
    """A stable identity for one case with one set of parameters: ``name[k=v,...]``."""
    if not params:
        return name
    inner = ",".join(f"{k}={json.dumps(params[k])}" for k in sorted(params))
    return f"{name}[{inner}]"


class Registry:
    """A flat name -> Case map."""

    def __init__(self) -> None:
        self._cases: dict[str, Case] = {}

    def add(self, case: Case) -> None:
        known = self._cases.get(case.name)
        # Re-importing the same file registers the same function again: replace it.
        if known is not None and (known.source, known.fn.__qualname__) != (
            case.source,
            case.fn.__qualname__,
        ):
            raise RegistryError(
                f"benchmark name {case.name!r} is already taken by "
                f"{known.fn.__qualname__} in {known.source}; pick another name"
            )
        self._cases[case.name] = case

    def get(self, name: str) -> Case:
        try:
            return self._cases[name]
        except KeyError:
            raise RegistryError(f"unknown benchmark {name!r}{self._hint(name)}") from None

    def _hint(self, name: str) -> str:
        close = difflib.get_close_matches(name, self._cases, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        known = ", ".join(sorted(self._cases)) or "none registered"
        return f"{hint} (known: {known})"

    def names(self) -> list[str]:
        return sorted(self._cases)

    def select(self, patterns: Sequence[str] = ()) -> list[Case]:
        """Cases whose name matches any glob (or contains any text) of ``patterns``.

        A pattern that matches no case is an error (a typo would otherwise go unnoticed
        beside a pattern that matches).
        """
        cases = [self._cases[n] for n in self.names()]
        for pattern in patterns:
            if not any(_matches(c.name, pattern) for c in cases):
                raise RegistryError(f"no benchmark matches {pattern!r}{self._hint(pattern)}")
        if not patterns:
            return cases
        return [c for c in cases if any(_matches(c.name, p) for p in patterns)]

    def __contains__(self, name: object) -> bool:
        return name in self._cases

    def __len__(self) -> int:
        return len(self._cases)


def _matches(name: str, pattern: str) -> bool:
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern in name


REGISTRY = Registry()


def benchmark(
    name: str,
    *,
    params: Mapping[str, Sequence[Scalar]] | None = None,
    baseline: str | None = None,
    items: str | int | None = None,
    registry: Registry | None = None,
) -> Callable[[SetupFn], SetupFn]:
    """Register ``fn(**params) -> callable to time`` as benchmark ``name``.

    >>> @benchmark("matmul", params={"n": [64, 128]})
    ... def matmul(n):
    ...     a = torch.randn(n, n)
    ...     return lambda: a @ a
    """
    if not name or not isinstance(name, str):
        raise ConfigError(f"benchmark name must be a non-empty string, got {name!r}")
    values = {str(k): list(v) for k, v in (params or {}).items()}
    for key, options in values.items():
        if not options:
            raise ConfigError(f"benchmark {name!r}: parameter {key!r} has no values")

    def register(fn: SetupFn) -> SetupFn:
        source = getattr(fn, "__module__", "") or ""
        module = sys.modules.get(source)
        origin = getattr(module, "__file__", None) if module is not None else None
        case = Case(
            name=name,
            fn=fn,
            params=values,
            baseline=baseline,
            items=items,
            source=str(origin) if source.startswith("torchsmith_bench_file_") else source,
        )
        (REGISTRY if registry is None else registry).add(case)
        return fn

    return register


def load_file(path: Path) -> None:
    """Import a benchmark file so its ``@benchmark`` functions register."""
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(f"benchmark file {path} does not exist")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    module_name = f"torchsmith_bench_file_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"benchmark file {path} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except TorchsmithError:
        del sys.modules[module_name]
        raise
    except Exception as exc:
        del sys.modules[module_name]
        where = f"{path}:{_failing_line(exc, path)}"
        raise ConfigError(
            f"benchmark file {where} failed to import: {type(exc).__name__}: {exc}"
        ) from exc


def _failing_line(exc: BaseException, path: Path) -> int | str:
    """The line of ``path`` where ``exc`` arose (or was raised from), '?' when unknown."""
    if isinstance(exc, SyntaxError) and exc.lineno is not None:
        return exc.lineno
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
    return frames[-1].lineno or "?" if frames else "?"


def discover(paths: Iterable[Path | str]) -> list[Path]:
    """Import benchmark files: each path is a file, or a directory searched for bench_*.py."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("bench_*.py") if "__pycache__" not in p.parts)
        elif path.is_file():
            files = [path]
        else:
            raise ConfigError(f"benchmark path {path} is neither a file nor a directory")
        for file in files:
            load_file(file)
        found.extend(files)
    return found


def load_entry_points(group: str = ENTRY_POINT_GROUP) -> list[str]:
    """Import every module listed in the entry-point group; returns their names."""
    loaded = []
    for entry in metadata.entry_points(group=group):
        importlib.import_module(entry.value.split(":")[0])
        loaded.append(entry.name)
    return loaded


def resolve_cases(
    cases: Iterable[Case | str] | None, registry: Registry | None = None
) -> list[Case]:
    """Cases given as objects or registered names; every registered case when ``None``."""
    reg = REGISTRY if registry is None else registry
    if cases is None:
        return reg.select()
    return [c if isinstance(c, Case) else reg.get(c) for c in cases]


def is_importable(case: Case) -> bool:
    """Whether another process can import ``case`` (from its bench file or module) and find
    it in the global ``REGISTRY``: not so for ``__main__`` or a private ``Registry``."""
    if not case.source or case.source == "__main__":
        return False
    return case.name in REGISTRY and REGISTRY.get(case.name) is case


def baseline_params(baseline: Case, params: Mapping[str, Any]) -> Params:
    """The baseline's parameters for one variant of its case: the shared ones take the
    case's values, the baseline's own ones their first value."""
    return {k: params[k] if k in params else values[0] for k, values in baseline.params.items()}
