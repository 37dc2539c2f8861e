"""Comparing two runs case by case, and a case's history with its change points."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from torchsmith.interfaces import BenchmarkResult

from ._changepoint import change_points
from ._errors import ComparisonError
from ._registry import case_key
from ._stats import (
    DEFAULT_ALPHA,
    DEFAULT_MAX_ROUND_SPREAD,
    DEFAULT_THRESHOLD,
    MIN_SAMPLES_FOR_INTERVAL,
    Verdict,
    decide,
    summarize,
)
from ._store import BenchStore, HistoryPoint, RunInfo

RowVerdict = Verdict | Literal["new", "missing"]


@dataclass(frozen=True)
class CaseComparison:
    """One case in both runs: medians, ratio head/base with its interval, p-value, verdict."""

    key: str
    case: str
    params: dict[str, Any]
    unit: str
    base_median: float | None
    head_median: float | None
    ratio: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    verdict: RowVerdict = "unchanged"


@dataclass(frozen=True)
class Comparison:
    rows: list[CaseComparison]
    threshold: float
    alpha: float
    base: RunInfo | None = None
    head: RunInfo | None = None
    counts: dict[str, int] = field(default_factory=dict)
    base_label: str = ""  # what base is, in words (a run, or the pooled history)
    notes: list[str] = field(default_factory=list)  # warnings on how the two were measured

    @property
    def base_name(self) -> str:
        return self.base_label or (f"run {self.base.run_id}" if self.base else "base")

    @property
    def regressions(self) -> list[CaseComparison]:
        return [row for row in self.rows if row.verdict == "regressed"]

    @property
    def has_regression(self) -> bool:
        return bool(self.regressions)


def compare_results(
    base: Sequence[BenchmarkResult],
    head: Sequence[BenchmarkResult],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
) -> Comparison:
    """Compare two lists of results by case key (name and parameters)."""
    before = {case_key(r.case, dict(r.params)): r for r in base}
    after = {case_key(r.case, dict(r.params)): r for r in head}
    rows = [_row(key, before.get(key), after.get(key), threshold, alpha)
            for key in sorted(before.keys() | after.keys())]  # fmt: skip
    counts = dict(Counter(str(row.verdict) for row in rows))
    notes = _rounds_notes(before, after)
    return Comparison(rows=rows, threshold=threshold, alpha=alpha, counts=counts, notes=notes)


def _rounds_notes(
    before: dict[str, BenchmarkResult], after: dict[str, BenchmarkResult]
) -> list[str]:
    """A warning for each pair of round counts that a case was timed in on the two sides,
    when they differ (a result stored before rounds were recorded warns of nothing)."""
    common = sorted(before.keys() & after.keys())
    pairs: dict[tuple[int, int], list[str]] = {}
    for key in common:
        b, h = before[key].extra.get("rounds"), after[key].extra.get("rounds")
        if b is not None and h is not None and int(b) != int(h):
            pairs.setdefault((int(b), int(h)), []).append(key)
    notes = []
    for (b, h), keys in sorted(pairs.items()):
        which = "" if len(keys) == len(common) else f" for {len(keys)} of {len(common)} cases"
        named = f" ({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''})" if which else ""
        notes.append(
            f"base was timed in {b} round(s), head in {h}{which}{named}: fewer rounds call "
            "changes in identical code more often (1 round about 2.6% of the time, 3 rounds "
            "0.2%), so time both sides with the same --rounds"
        )
    return notes


def _row(
    key: str,
    base: BenchmarkResult | None,
    head: BenchmarkResult | None,
    threshold: float,
    alpha: float,
) -> CaseComparison:
    some = head or base
    assert some is not None
    row = CaseComparison(
        key=key,
        case=some.case,
        params=dict(some.params),
        unit=some.unit,
        base_median=base.statistics.median if base else None,
        head_median=head.statistics.median if head else None,
    )
    if base is None:
        return replace(row, verdict="new")
    if head is None:
        return replace(row, verdict="missing")
    # Rounds of one run that disagree mean a disturbed round: no verdict of change then.
    spreads = [r.extra.get("round_spread", 0.0) for r in (base, head)]
    unstable = max(spreads) > DEFAULT_MAX_ROUND_SPREAD
    d = decide(base.samples, head.samples, threshold=threshold, alpha=alpha, unstable=unstable)
    # A side of too few samples has no interval worth showing (its verdict is noisy).
    shown = min(len(base.samples), len(head.samples)) >= MIN_SAMPLES_FOR_INTERVAL
    return replace(
        row, ratio=d.ratio, ci_low=d.ci_low if shown else None,
        ci_high=d.ci_high if shown else None, p_value=d.p_value, verdict=d.verdict,
    )  # fmt: skip


def compare(
    store: BenchStore,
    base: int | str,
    head: int | str,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    any_environment: bool = False,
) -> Comparison:
    """Compare stored runs ``base`` and ``head`` (ids, 'latest~1', uids or git commits).

    Runs from different environment fingerprints are refused unless ``any_environment``.
    """
    base_info = store.run(store.resolve_run(base))
    head_info = store.run(store.resolve_run(head))
    if base_info.fingerprint != head_info.fingerprint and not any_environment:
        raise ComparisonError(
            f"runs {base_info.run_id} and {head_info.run_id} ran in different environments "
            f"(fingerprints {base_info.fingerprint} and {head_info.fingerprint}); timings from "
            "different machines are not comparable. Pass any_environment=True "
            "(--any-environment) to compare them anyway"
        )
    result = compare_results(
        store.results(base_info.run_id), store.results(head_info.run_id),
        threshold=threshold, alpha=alpha,
    )  # fmt: skip
    return Comparison(
        rows=result.rows, threshold=threshold, alpha=alpha, base=base_info, head=head_info,
        counts=result.counts, notes=result.notes,
    )  # fmt: skip


def compare_history(
    store: BenchStore,
    head: int | str,
    *,
    window: int = 5,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    any_environment: bool = False,
) -> Comparison:
    """Compare run ``head`` with the pooled samples of up to ``window`` earlier runs of the
    same environment (of any environment with ``any_environment``; per case, the most
    recent runs that have it).

    Pooling runs puts their run-to-run spread into the base, so the test is the more
    cautious for it, as with rounds.
    """
    head_info = store.run(store.resolve_run(head))
    fingerprint = None if any_environment else head_info.fingerprint
    earlier = [
        r for r in store.runs(fingerprint=fingerprint)
        if (r.created_at, r.run_id) < (head_info.created_at, head_info.run_id)
    ]  # fmt: skip
    if not earlier:
        where = "any environment" if any_environment else f"environment {fingerprint}"
        raise ComparisonError(
            f"run {head_info.run_id} has no earlier run in {where} to compare with"
        )
    pooled: dict[str, BenchmarkResult] = {}
    used: dict[str, int] = {}
    for info in earlier:  # newest first
        for past in store.results(info.run_id):
            key = case_key(past.case, dict(past.params))
            if used.get(key, 0) >= window:
                continue
            used[key] = used.get(key, 0) + 1
            if key in pooled:
                pooled[key].samples += past.samples
                # Several runs pooled: their run-to-run spread is in the samples now.
                pooled[key].extra.pop("round_spread", None)
            else:  # one run alone keeps its rounds' spread, as comparing with it does
                pooled[key] = past.model_copy(deep=True)
    for base in pooled.values():
        base.statistics = summarize(base.samples)
    result = compare_results(
        list(pooled.values()), store.results(head_info.run_id), threshold=threshold, alpha=alpha
    )
    runs = max(used.values(), default=0)
    return Comparison(
        rows=result.rows, threshold=threshold, alpha=alpha, head=head_info,
        counts=result.counts, base_label=f"the last {runs} runs (pooled)", notes=result.notes,
    )  # fmt: skip


@dataclass(frozen=True)
class History:
    key: str
    points: list[HistoryPoint]
    steps: list[int]  # indices into points where a new level starts

    @property
    def step_commits(self) -> list[str | None]:
        return [self.points[i].git_commit for i in self.steps]


def history(
    store: BenchStore,
    key: str,
    *,
    fingerprint: str | None = None,
    any_environment: bool = False,
    min_effect: float = 0.05,
    limit: int | None = None,
) -> History:
    """A case's medians over the runs of environment ``fingerprint`` (the last ``limit`` runs
    when given) with the steps change-point detection finds in them. Mixing environments
    needs ``any_environment=True`` instead of a fingerprint (see ``BenchStore.history``)."""
    points = store.history(key, fingerprint=fingerprint, any_environment=any_environment)
    if limit:
        points = points[-limit:]
    steps = change_points([p.median for p in points], min_effect=min_effect) if points else []
    return History(key=key, points=points, steps=steps)
