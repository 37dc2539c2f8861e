"""Rounds: the same cases timed in several fresh worker processes, samples pooled.

A process has its own offset (memory layout, allocator and cache state, what else the
machine is doing that minute): two runs of identical code in two processes differ by more
than their samples' spread suggests. On this machine that offset was about 1.4% (see
tests/test_decision_study.py), which makes a 5% threshold trip on identical code about 1%
of the time. Pooling ``rounds`` processes per run averages the offsets, as pyperf's worker
processes and asv's rounds do.

Now and then a round is disturbed as a whole (another job starts on a shared machine: about
1 process in 12 here, +7.6% and +37%). With 3 rounds (the CLI default) such a round stands
out from the other two and is left out of the pool (``_stats.kept_rounds``): its samples move
to ``left_out_samples``, stored but not in the statistics. With 2 rounds the disturbed one
cannot be told apart, so the run is only called noisy when its rounds disagree.
"""

from __future__ import annotations

import json
import logging
import math
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from torchsmith.interfaces import BenchmarkResult, ConfigError, Environment

from ._errors import CaseError
from ._memory import LATER_ROUNDS
from ._registry import Case, case_key, is_importable
from ._stats import decide, kept_rounds, round_spread, summarize
from ._timer import MeasureConfig

OnProgress = Callable[[str, int, int, int], None]
PROGRESS_PREFIX = "torchsmith-bench-progress "

logger = logging.getLogger(__name__)


def _request(
    cases: Sequence[Case], baselines: Sequence[Case], config: MeasureConfig, memory: str,
    environment: Environment, out: Path,
) -> dict[str, Any]:  # fmt: skip
    for case in [*cases, *baselines]:
        if not is_importable(case):
            raise ConfigError(
                f"benchmark {case.name!r} is not importable from a file or module, so it "
                "cannot run in worker processes; use rounds=1 or define it in a bench_*.py file"
            )
    return {
        "sources": sorted({c.source for c in [*cases, *baselines]}),
        "names": [c.name for c in cases],
        "config": asdict(config),
        "memory": memory,
        "environment": environment.model_dump(),
        "out": str(out),
    }


def _run_worker(
    request: Mapping[str, Any], on_line: Callable[[str], None]
) -> list[BenchmarkResult]:
    process = subprocess.Popen(
        [sys.executable, "-m", "torchsmith.bench._worker"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdin is not None and process.stderr is not None
    process.stdin.write(json.dumps(request))
    process.stdin.close()
    tail: list[str] = []
    for line in process.stderr:
        if line.startswith(PROGRESS_PREFIX):
            on_line(line[len(PROGRESS_PREFIX) :])
        else:
            tail = [*tail[-20:], line.rstrip()]
    if process.wait() != 0:
        raise CaseError(_worker_failure(tail))
    data = json.loads(Path(request["out"]).read_text())
    return [BenchmarkResult.read(item) for item in data]


def _worker_failure(stderr_tail: list[str]) -> str:
    """One line, as a failure without workers reads (``benchmark boom failed:
    RuntimeError: kaboom``): the exception the worker ended with, its traceback logged at
    debug level."""
    logger.debug("benchmark worker's stderr:\n%s", "\n".join(stderr_tail))
    lines = [line for line in stderr_tail if line.strip()]
    last = lines[-1] if lines else "no output"
    raised = re.fullmatch(r"[\w.]*(?:Error|Exception|Interrupt|Exit)\w*: (.+)", last)
    return raised.group(1) if raised else f"benchmark worker process failed: {last}"


def measure_rounds(
    cases: Sequence[Case],
    baselines: Sequence[Case],
    *,
    rounds: int,
    config: MeasureConfig,
    memory: str,
    environment: Environment,
    on_progress: OnProgress | None = None,
) -> list[BenchmarkResult]:
    """Time ``cases`` in ``rounds`` worker processes, one after another; pool per case."""
    per_round: list[list[BenchmarkResult]] = []
    with tempfile.TemporaryDirectory(prefix="torchsmith-bench-") as tmp:
        for index in range(rounds):
            out = Path(tmp) / f"round{index}.json"
            mode = memory if index == 0 else LATER_ROUNDS[memory]
            request = _request(cases, baselines, config, mode, environment, out)

            def forward(line: str, index: int = index) -> None:
                if on_progress is not None:
                    label, done, total, samples = json.loads(line)
                    on_progress(f"round {index + 1}/{rounds}: {label}", done, total, samples)

            per_round.append(_run_worker(request, forward))
    return merge_rounds(per_round)


def merge_rounds(per_round: Sequence[Sequence[BenchmarkResult]]) -> list[BenchmarkResult]:
    """One result per case: samples of the kept rounds concatenated, statistics recomputed.

    With 3 or more rounds a round whose median is far from the others' (``kept_rounds``) is
    left out of the case's pool: its samples go to ``left_out_samples`` (in round order) and
    ``extra`` records ``rounds_dropped`` and the left-out round's ``dropped_round_ratio`` (its
    median over the median of the round medians). ``round_spread`` is taken over the kept
    rounds.
    """
    by_key: dict[str, list[BenchmarkResult]] = {}
    for results in per_round:
        for result in results:
            by_key.setdefault(case_key(result.case, dict(result.params)), []).append(result)
    pooled = {key: _pool(rounds) for key, rounds in by_key.items()}
    for result in pooled.values():
        _refresh(result, pooled)
    return list(pooled.values())


def _pool(rounds: Sequence[BenchmarkResult]) -> BenchmarkResult:
    medians = [r.statistics.median for r in rounds]
    kept = kept_rounds(medians)
    merged = rounds[kept[0]].model_copy(deep=True)
    for index in kept[1:]:
        merged.samples += rounds[index].samples
    peaks = [r.peak_memory_bytes for r in rounds if r.peak_memory_bytes]
    merged.peak_memory_bytes = max(peaks) if peaks else None
    for r in rounds:  # the RSS probe runs in round 1 only, which may be the one left out
        if "rss_growth_bytes" in r.extra:
            merged.extra["rss_growth_bytes"] = r.extra["rss_growth_bytes"]
    merged.extra["round_spread"] = round_spread([medians[i] for i in kept])
    merged.extra["rounds"] = float(len(rounds))
    dropped = [i for i in range(len(rounds)) if i not in kept]
    merged.left_out_samples = [x for i in dropped for x in rounds[i].samples]
    if dropped:
        center = float(np.median(medians))
        merged.extra["rounds_dropped"] = float(len(dropped))
        worst = max(dropped, key=lambda i: abs(math.log(medians[i] / center)))
        merged.extra["dropped_round_ratio"] = medians[worst] / center
    return merged


def _refresh(result: BenchmarkResult, pooled: Mapping[str, BenchmarkResult]) -> None:
    old_median = result.statistics.median
    result.statistics = summarize(result.samples)
    if "throughput" in result.extra:  # items per call stay the same; the median moved
        items = result.extra["throughput"] * old_median
        result.extra["throughput"] = items / result.statistics.median
    base = pooled.get(result.baseline or "")
    if base is not None and "baseline_ratio" in result.extra:
        d = decide(base.samples, result.samples)
        result.extra.update(
            baseline_ratio=d.ratio, baseline_ratio_ci_low=d.ci_low,
            baseline_ratio_ci_high=d.ci_high, baseline_p_value=d.p_value,
        )  # fmt: skip
