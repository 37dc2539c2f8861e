"""Running cases: every parameter combination, side by side with its baseline, then stored.

A case with a baseline is timed in interleaved rounds with it; its result carries the ratio
to the baseline (``extra["baseline_ratio"]`` with a bootstrap interval and a p-value) from
those paired samples. The whole run is measured first and written in one transaction.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from torchsmith.interfaces import BenchmarkResult, ConfigError, Environment, TorchsmithError

from ._environment import capture_environment
from ._errors import CaseError
from ._memory import MemoryMode, check_mode, peak_memory
from ._registry import (
    REGISTRY,
    Case,
    Params,
    Registry,
    baseline_params,
    case_key,
    is_importable,
    resolve_cases,
)
from ._rounds import measure_rounds
from ._stats import decide, summarize
from ._store import BenchStore
from ._timer import MeasureConfig, Measurement, measure, measure_interleaved

logger = logging.getLogger(__name__)

DEFAULT_ROUNDS = 3  # worker processes per run; see _rounds and tests/test_decision_study.py

# (what is being timed, jobs done, jobs in all, samples so far)
OnProgress = Callable[[str, int, int, int], None]


@dataclass(frozen=True)
class Job:
    case: Case
    params: Params
    baseline: Case | None = None

    @property
    def key(self) -> str:
        return case_key(self.case.name, self.params)

    @property
    def baseline_key(self) -> str | None:
        if self.baseline is None:
            return None
        return case_key(self.baseline.name, baseline_params(self.baseline, self.params))

    @property
    def label(self) -> str:
        return f"{self.key} vs {self.baseline.name}" if self.baseline else self.key


def plan(cases: Iterable[Case], registry: Registry | None = None) -> list[Job]:
    """One job per case and parameter combination; baselines are looked up now.

    A case variant that is another job's baseline is measured there, interleaved, and not
    again on its own: its stored result is the one the ratio came from.
    """
    reg = REGISTRY if registry is None else registry
    jobs: list[Job] = []
    for case in cases:
        baseline = reg.get(case.baseline) if case.baseline else None
        jobs.extend(Job(case, params, baseline) for params in case.variants())
    as_baseline = {job.baseline_key for job in jobs if job.baseline is not None}
    return [job for job in jobs if job.baseline is not None or job.key not in as_baseline]


def _load_average() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):  # not on every platform
        return None


def _own_extra(fn: Callable[[], object], case: Case) -> dict[str, float]:
    """Numbers the timed callable reports itself, through an ``extra()`` method (optional).

    A NaN or infinite number is left out with a warning (the database would refuse the whole
    run at the end); anything that is not a number is a ``CaseError``, raised now.
    """
    method = getattr(fn, "extra", None)
    if not callable(method):
        return {}
    with _failing_case(f"{case.name} (its extra())"):
        numbers = {str(k): float(v) for k, v in dict(method()).items()}
    bad = sorted(k for k, v in numbers.items() if not math.isfinite(v))
    if bad:
        logger.warning("benchmark %s: extra() gave non-finite %s; left out of the result",
                       case.name, ", ".join(f"{k}={numbers[k]}" for k in bad))  # fmt: skip
    return {k: v for k, v in numbers.items() if k not in bad}


def _result(
    case: Case,
    params: Params,
    measured: Measurement,
    environment: Environment,
    memory: tuple[int | None, dict[str, float]],
    fn: Callable[[], object],
) -> BenchmarkResult:
    stats = summarize(measured.samples)
    peak, memory_extra = memory
    extra = {**_own_extra(fn, case), **memory_extra}
    load = _load_average()
    if load is not None:  # how busy the machine was: above the core count, distrust timings
        extra["load_average_1m"] = load
        extra["logical_cpus"] = os.cpu_count() or 1  # of the machine measured, for reports
    items = case.items_per_call(params)
    if items is not None and stats.median > 0:
        extra["throughput"] = items / stats.median  # items per second
    return BenchmarkResult(
        case=case.name,
        params=params,
        samples=measured.samples,
        inner_loops=measured.inner_loops,
        statistics=stats,
        environment=environment,
        peak_memory_bytes=peak,
        extra=extra,
    )


@contextmanager
def _failing_case(label: str) -> Iterator[None]:
    try:
        yield
    except TorchsmithError:
        raise
    except Exception as exc:
        raise CaseError(f"benchmark {label} failed: {type(exc).__name__}: {exc}") from exc


def _run_job(
    job: Job,
    config: MeasureConfig,
    environment: Environment,
    memory: MemoryMode,
    on_sample: Callable[[int], None],
) -> list[BenchmarkResult]:
    with _failing_case(job.label):
        fn = job.case.setup(**job.params)
        if job.baseline is None:
            measured = measure(fn, config, on_sample)
            peak = peak_memory(job.case, job.params, fn, memory)
            return [_result(job.case, job.params, measured, environment, peak, fn)]
        base_params = baseline_params(job.baseline, job.params)
        base_fn = job.baseline.setup(**base_params)
        base, head = measure_interleaved(base_fn, fn, config, on_sample)
        peak = peak_memory(job.case, job.params, fn, memory)
        base_peak = peak_memory(job.baseline, base_params, base_fn, memory)
    head_result = _result(job.case, job.params, head, environment, peak, fn)
    decision = decide(base.samples, head.samples)
    head_result.baseline = case_key(job.baseline.name, base_params)
    head_result.extra.update(
        baseline_ratio=decision.ratio,
        baseline_ratio_ci_low=decision.ci_low,
        baseline_ratio_ci_high=decision.ci_high,
        baseline_p_value=decision.p_value,
    )
    return [head_result, _result(job.baseline, base_params, base, environment, base_peak, base_fn)]


def measure_cases(
    cases: Iterable[Case | str] | None = None,
    *,
    config: MeasureConfig | None = None,
    memory: MemoryMode = "auto",
    environment: Environment | None = None,
    registry: Registry | None = None,
    on_progress: OnProgress | None = None,
    rounds: int | None = None,
) -> list[BenchmarkResult]:
    """Time the cases (all registered ones when ``None``); nothing is stored.

    ``rounds > 1`` times them in that many fresh worker processes, one after another, and
    pools the samples, leaving a disturbed round out (cases must then come from bench files
    or importable modules). ``rounds=None`` (the default) means 3 rounds, the number the
    decision study needs for <= 1% false flags (one round flags identical code 2.6% of the
    time), or 1 round, with a warning, when a case cannot be imported by a worker (defined
    in ``__main__`` or in a private ``Registry``).
    """
    config = config or MeasureConfig()
    environment = environment or capture_environment()
    resolved = resolve_cases(cases, registry)
    jobs = plan(resolved, registry)
    memory = check_mode(memory)
    baselines = list({job.baseline.name: job.baseline for job in jobs if job.baseline}.values())
    rounds = _choose_rounds(rounds, [*resolved, *baselines])
    if rounds > 1:
        return measure_rounds(
            resolved, baselines, rounds=rounds, config=config, memory=memory,
            environment=environment, on_progress=on_progress,
        )  # fmt: skip
    results: dict[str, BenchmarkResult] = {}
    for index, job in enumerate(jobs):

        def on_sample(n: int, label: str = job.label, index: int = index) -> None:
            if on_progress is not None:
                on_progress(label, index, len(jobs), n)

        if on_progress is not None:
            on_progress(job.label, index, len(jobs), 0)  # started
        for result in _run_job(job, config, environment, memory, on_sample):
            result.extra.setdefault("rounds", 1.0)  # compare warns when the sides' differ
            # A baseline shared by several cases keeps its first (interleaved) measurement.
            results.setdefault(case_key(result.case, dict(result.params)), result)
        logger.info("timed %s", job.label)
        if on_progress is not None:
            on_progress(job.label, index + 1, len(jobs), 0)
    return list(results.values())


def _choose_rounds(rounds: int | None, cases: list[Case]) -> int:
    if rounds is not None:
        if rounds < 1:
            raise ConfigError(f"rounds must be at least 1, got {rounds}")
        return rounds
    stuck = sorted({case.name for case in cases if not is_importable(case)})
    if not stuck:
        return DEFAULT_ROUNDS
    logger.warning(
        "timing in 1 round, in this process, instead of %d worker rounds: %s cannot be "
        "imported by a worker (define cases in a bench_*.py file or a module). One round "
        "flags identical code as changed about 2.6%% of the time; pass rounds=1 to say so",
        DEFAULT_ROUNDS, ", ".join(stuck),
    )  # fmt: skip
    return 1


def run(
    cases: Iterable[Case | str] | None = None,
    *,
    store: BenchStore | str | Path,
    label: str | None = None,
    config: MeasureConfig | None = None,
    memory: MemoryMode = "auto",
    rounds: int | None = None,
    registry: Registry | None = None,
    progress: bool = False,
    on_progress: OnProgress | None = None,
) -> int:
    """Time the cases and store them as one run (one transaction); returns the run id.

    ``store``: an open :class:`BenchStore`, or the path of one, opened only once the cases
    are timed, so other processes may read and write the history meanwhile.

    ``rounds`` as in :func:`measure_cases`: 3 worker rounds by default, 1 (with a warning)
    for cases a worker cannot import.

    ``progress=True`` shows a live display on stderr; ``on_progress`` receives the same
    updates as ``(label, jobs_done, jobs_total, samples)``.
    """
    environment = capture_environment()
    with _progress(progress, on_progress) as update:
        results = measure_cases(
            cases, config=config, memory=memory, environment=environment,
            registry=registry, on_progress=update, rounds=rounds,
        )  # fmt: skip
    if isinstance(store, BenchStore):
        return store.save_run(results, environment=environment, label=label)
    with BenchStore(store) as opened:
        return opened.save_run(results, environment=environment, label=label)


@contextmanager
def _progress(show: bool, also: OnProgress | None) -> Iterator[OnProgress | None]:
    if not show:
        yield also
        return
    from ._progress import live_progress

    with live_progress(also) as update:
        yield update
