"""Fixtures shared by torchsmith-bench's tests: synthetic results and a fresh registry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from torchsmith.bench import Registry, summarize
from torchsmith.bench import _timer as timer
from torchsmith.interfaces import BenchmarkResult, Environment

MakeResult = Callable[..., BenchmarkResult]


@pytest.fixture
def environment() -> Environment:
    return Environment(fingerprint="fp-test", git_commit="abc1234", git_branch="main", cpu="test")


@pytest.fixture
def make_result(environment: Environment) -> MakeResult:
    """BenchmarkResult with lognormal samples around ``median`` (seeded)."""

    def make(
        case: str = "case",
        median: float = 1e-3,
        *,
        n: int = 30,
        spread: float = 0.02,
        seed: int = 0,
        params: dict[str, object] | None = None,
        env: Environment | None = None,
        samples: list[float] | None = None,
    ) -> BenchmarkResult:
        rng = np.random.default_rng(seed)
        values = samples or list(median * np.exp(rng.normal(0.0, spread, n)))
        return BenchmarkResult(
            case=case,
            params=params or {},
            samples=values,
            statistics=summarize(values),
            environment=env or environment,
            extra={"throughput": 1.0 / float(np.median(values))},
        )

    return make


class FakeClock:
    """perf_counter that only moves when the timed work says so."""

    def __init__(self) -> None:
        self.now = 0.0
        self.log: list[str] = []

    def __call__(self) -> float:
        return self.now

    def work(self, seconds: float, name: str = "f"):
        def fn() -> None:
            self.now += seconds
            self.log.append(name)

        return fn


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(timer.time, "perf_counter", fake)
    return fake


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "bench.duckdb"


@pytest.fixture
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty global REGISTRY for the test (benchmark files register there)."""
    from torchsmith.bench import REGISTRY

    monkeypatch.setattr(REGISTRY, "_cases", {})
