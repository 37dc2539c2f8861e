"""The decision rule on synthetic runs with this machine's measured noise (fixed seeds).

Noise model, from tests/performance/bench_noise.py (12 processes timing a 256-wide MLP
forward with the default MeasureConfig, one thread, on this 2-core VM):

* within a run, samples spread by a robust CV of 1.6% (median over runs): lognormal 0.016;
* 11% of samples sat more than 10% above their run's median: a right tail of outliers,
  modelled as 10% of samples times (1.1 + Exp(mean 0.2));
* between processes, run medians differed by 1.5% (sd of log medians of the 10 steady
  runs): a lognormal offset of 0.015 per process (round);
* 2 of those 12 runs were disturbed (+7.6% and +37%) by other jobs starting on the shared
  machine: with probability 1/12 a round gets an extra offset of log(1 + Exp(mean 0.15)).

The default MeasureConfig took 11 to 100 samples per run; 20 per round is the cautious end.
The rule under test is the shipped one, driven through the same functions ``run`` and
``compare`` use: each round is a ``BenchmarkResult``, ``merge_rounds`` pools a run's rounds
(with 3 rounds, the default, a round whose median is more than 3% from the median of the
round medians is left out), and ``compare_results`` decides (Mann-Whitney p < 0.01 and ratio
of medians beyond 5%, ``noisy`` when a run's kept round medians still differ by more than
6%). Only the number of bootstrap resamples is lowered, for speed.

When the machine was under sustained load (five other test suites on 2 cores, load 6-8),
runs differed by up to 5x with steady samples: no statistic on separate runs can tell that
from a code change, which is what interleaved baselines (``@benchmark(baseline=...)``)
and rerunning noisy verdicts are for.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from torchsmith.bench import _compare, _stats, compare_results
from torchsmith.bench._rounds import merge_rounds
from torchsmith.interfaces import BenchmarkResult, Environment, Statistics

TRIALS = 1000
SAMPLES_PER_ROUND = 20
ROUNDS = 3
SLOWDOWN = 1.10
DISTURBED = 1 / 12
ENVIRONMENT = Environment(fingerprint="study")


@pytest.fixture(autouse=True)
def fewer_resamples(monkeypatch: pytest.MonkeyPatch) -> None:
    """200 bootstrap resamples instead of 2000 keep 4000 comparisons to seconds. The interval
    only separates noisy from unchanged; the rule itself is the shipped one."""
    monkeypatch.setattr(_compare, "decide", functools.partial(_stats.decide, resamples=200))
    fast_ci = functools.partial(_stats.bootstrap_median_ci, resamples=200)
    monkeypatch.setattr(_stats, "bootstrap_median_ci", fast_ci)


def _round(rng: np.random.Generator, time: float, disturbed_rate: float) -> BenchmarkResult:
    """One worker round's result for case ``c``, with this machine's noise."""
    offset = rng.normal(0.0, 0.015)
    if rng.random() < disturbed_rate:
        offset += np.log1p(rng.exponential(0.15))
    samples = time * np.exp(offset + rng.normal(0.0, 0.016, SAMPLES_PER_ROUND))
    outliers = rng.random(SAMPLES_PER_ROUND) < 0.10
    samples[outliers] *= 1.1 + rng.exponential(0.2, outliers.sum())
    # merge_rounds only reads a round's median; it recomputes the pooled statistics.
    median = float(np.median(samples))
    stats = Statistics(n=SAMPLES_PER_ROUND, median=median, mean=median, stdev=0.0, iqr=0.0,
                       min=float(samples.min()), max=float(samples.max()))  # fmt: skip
    return BenchmarkResult(case="c", params={}, samples=samples.tolist(), statistics=stats,
                           environment=ENVIRONMENT)  # fmt: skip


def _run(
    rng: np.random.Generator, time: float, rounds: int, disturbed_rate: float
) -> list[BenchmarkResult]:
    """A run as ``measure_rounds`` makes it: rounds pooled by the shipped ``merge_rounds``."""
    return merge_rounds([[_round(rng, time, disturbed_rate)] for _ in range(rounds)])


def _verdicts(factor: float, *, rounds: int, disturbed_rate: float, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    for _ in range(TRIALS):
        base = _run(rng, 1.0, rounds, disturbed_rate)
        head = _run(rng, factor, rounds, disturbed_rate)
        (row,) = compare_results(base, head).rows  # what compare() decides per case
        counts[row.verdict] = counts.get(row.verdict, 0) + 1
    return counts


def _rate(counts: dict[str, int], *verdicts: str) -> float:
    return sum(counts.get(v, 0) for v in verdicts) / TRIALS


def test_steady_machine_catches_a_10_percent_slowdown_and_rarely_flags_identical_runs() -> None:
    slowed = _verdicts(SLOWDOWN, rounds=ROUNDS, disturbed_rate=0.0, seed=1)
    same = _verdicts(1.0, rounds=ROUNDS, disturbed_rate=0.0, seed=2)
    assert _rate(slowed, "regressed") >= 0.95  # measured 0.988
    assert _rate(same, "regressed", "improved") <= 0.01  # measured 0.002


def test_a_disturbed_round_is_left_out_so_the_targets_hold_on_a_shared_machine() -> None:
    slowed = _verdicts(SLOWDOWN, rounds=ROUNDS, disturbed_rate=DISTURBED, seed=3)
    same = _verdicts(1.0, rounds=ROUNDS, disturbed_rate=DISTURBED, seed=4)
    # Over six seed pairs (this one included): caught 0.957-0.971, flagged 0.003-0.009.
    assert _rate(slowed, "regressed") >= 0.95  # measured 0.969
    assert _rate(same, "regressed", "improved") <= 0.01  # measured 0.007
    # A real slowdown is almost never passed off as unchanged or faster; the rest is noisy.
    assert _rate(slowed, "unchanged", "improved") <= 0.01  # measured 0.003


@pytest.mark.slow
def test_two_rounds_cannot_tell_which_one_was_disturbed_which_is_why_the_cli_runs_three() -> None:
    slowed = _verdicts(SLOWDOWN, rounds=2, disturbed_rate=DISTURBED, seed=3)
    # Two rounds that disagree are only noisy: a quarter of comparisons touch a disturbed
    # round, so far fewer slowdowns are called regressed.
    assert _rate(slowed, "regressed") < 0.90  # measured 0.770 (22.6% noisy)


@pytest.mark.slow
def test_one_round_is_not_enough() -> None:
    same = _verdicts(1.0, rounds=1, disturbed_rate=0.0, seed=5)
    # Process offsets alone (1.5% each) push identical single-process runs past 5% too often.
    assert _rate(same, "regressed", "improved") > 0.01  # measured 0.026


@pytest.mark.slow
def test_what_the_threshold_and_the_interval_do_not_promise() -> None:
    """The two limits the README states: the 5% threshold applies to the measured ratio (a
    true change below it is sometimes called), and a ratio's interval, over samples pooled as
    if independent, leaves out the process offset (so it covers the true ratio far less than
    95% of the time)."""
    print()
    for factor, low, high in ((1.03, 0.03, 0.20), (1.04, 0.12, 0.45)):  # measured 0.110, 0.248
        called = _rate(_verdicts(factor, rounds=ROUNDS, disturbed_rate=0.0, seed=6), "regressed")
        print(f"true ratio {factor}: called regressed {called:.3f}")
        assert low < called < high
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(400):
        base, head = _run(rng, 1.0, ROUNDS, 0.0), _run(rng, SLOWDOWN, ROUNDS, 0.0)
        (row,) = compare_results(base, head).rows
        assert row.ci_low is not None and row.ci_high is not None
        covered += row.ci_low <= SLOWDOWN <= row.ci_high
    print(f"the ratio's 95% interval covered {SLOWDOWN}: {covered / 400:.3f}")
    assert 0.3 < covered / 400 < 0.8  # measured 0.472
