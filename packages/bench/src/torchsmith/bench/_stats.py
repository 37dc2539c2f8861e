"""Statistics on raw samples: summaries, bootstrap intervals, Mann-Whitney U, the verdict.

Everything here is numpy only. The Mann-Whitney U test uses the normal approximation with
the tie correction and a continuity correction (as scipy's ``method="asymptotic"``); scipy
is only a test-time reference for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from torchsmith.interfaces import DataError, Statistics

Verdict = Literal["improved", "regressed", "unchanged", "noisy"]

# A measured ratio within 5% is never called a change. A true change of 3% or 4% still
# measures past 5% now and then: under the decision study's noise model (3 rounds) it was
# called regressed in 11% and 25% of 1000 runs (tests/test_decision_study.py, slow).
DEFAULT_THRESHOLD = 0.05
DEFAULT_ALPHA = 0.01  # Mann-Whitney U two-sided p-value below which a shift is significant
DEFAULT_CONFIDENCE = 0.95
# Below this many samples a bootstrap interval of the median is far too narrow (in two
# simulations it covered 49-50%, 74-77% and 85-88% of the time for 2, 3 and 4 lognormal
# samples): a summary then has no interval, and a comparison with such a side is never
# called unchanged.
MIN_SAMPLES_FOR_INTERVAL = 5
DEFAULT_RESAMPLES = 2000
# Runs whose samples spread more than this (robust CV) get no improved/regressed verdict:
# on this machine a quiet run shows ~2%, a run squeezed by other jobs ~25%.
DEFAULT_MAX_SPREAD = 0.10
# Rounds of one run (worker processes) whose medians differ by more than this mean a round
# was disturbed (another job's burst): its run gets no improved/regressed verdict. See
# tests/test_decision_study.py for why 6%.
DEFAULT_MAX_ROUND_SPREAD = 0.06
# With 3 or more rounds, a round whose median sits more than this far (in log terms) from
# the median of the round medians is left out of the pool. Process offsets on this machine
# have a spread of 1.5% (see tests/test_decision_study.py), so 3% is two of those: a quiet
# round rarely goes past it, and leaving one out then costs only samples, while a round
# disturbed by another job (+7.6% and +37% were seen) no longer drags the pooled median or
# turns the whole run noisy. A MAD-based cut was not used: with three rounds the MAD is just
# the smaller of two deviations and swings too much to scale a threshold by.
DEFAULT_MAX_ROUND_DEVIATION = 0.03
# Other jobs only ever add time. A round more than this much *faster* than the median round
# is therefore not the disturbed one: the others were slowed (two of three disturbed), and
# leaving it out would keep exactly the wrong rounds. Then nothing is left out and the rounds'
# disagreement makes the verdict noisy. 5% (the effect threshold, over three times the
# process spread) is where the study in tests/test_decision_study.py keeps false alarms
# under 1% with disturbed rounds; below it a fast round is ordinary process variation.
DEFAULT_MAX_FAST_DEVIATION = 0.05


def _as_samples(values: ArrayLike, what: str) -> NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise DataError(f"{what}: no samples; a benchmark needs at least one sample")
    if not np.all(np.isfinite(array)):
        raise DataError(f"{what}: samples contain NaN or infinity")
    return array


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def bootstrap_median_ci(
    samples: ArrayLike,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int | np.random.Generator | None = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the median."""
    x = _as_samples(samples, "bootstrap_median_ci")
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = _rng(seed)
    medians = np.median(x[rng.integers(0, x.size, (resamples, x.size))], axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(medians, [tail, 1.0 - tail])
    return float(low), float(high)


def summarize(samples: ArrayLike, *, seed: int | None = 0) -> Statistics:
    """Median, spread and a bootstrap interval of the median, as an interfaces record."""
    x = _as_samples(samples, "summarize")
    q1, q3 = np.quantile(x, [0.25, 0.75])
    low: float | None = None
    high: float | None = None
    if x.size >= MIN_SAMPLES_FOR_INTERVAL:
        low, high = bootstrap_median_ci(x, seed=seed)
    return Statistics(
        n=int(x.size),
        median=float(np.median(x)),
        mean=float(x.mean()),
        stdev=float(x.std(ddof=1)) if x.size > 1 else 0.0,
        iqr=float(q3 - q1),
        min=float(x.min()),
        max=float(x.max()),
        ci_low=low,
        ci_high=high,
    )


def ratio_of_medians_ci(
    base: ArrayLike,
    head: ArrayLike,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int | np.random.Generator | None = 0,
) -> tuple[float, float, float]:
    """median(head) / median(base) with a percentile bootstrap interval (both resampled)."""
    x = _as_samples(base, "base")
    y = _as_samples(head, "head")
    if np.median(x) <= 0:
        raise DataError("base: the median is not positive, so a ratio is meaningless")
    rng = _rng(seed)
    mx = np.median(x[rng.integers(0, x.size, (resamples, x.size))], axis=1)
    my = np.median(y[rng.integers(0, y.size, (resamples, y.size))], axis=1)
    ratios = my / np.maximum(mx, np.finfo(np.float64).tiny)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratios, [tail, 1.0 - tail])
    return float(np.median(y) / np.median(x)), float(low), float(high)


def _average_ranks(values: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """1-based ranks with ties given their average rank, and the size of each tie group."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # A new group starts wherever the sorted value changes.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    counts = np.diff(np.r_[starts, values.size])
    average = starts + (counts + 1) / 2.0  # mean of ranks start+1 .. start+count
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(average, counts)
    return ranks, counts


def robust_cv(samples: ArrayLike) -> float:
    """IQR / 1.349 / median: the coefficient of variation, robust to outliers."""
    x = _as_samples(samples, "robust_cv")
    median = float(np.median(x))
    q1, q3 = np.quantile(x, [0.25, 0.75])
    return float((q3 - q1) / 1.349 / median) if median > 0 else math.inf


def round_spread(medians: ArrayLike) -> float:
    """max/min - 1 of the medians of a run's rounds: 0 when they agree."""
    m = _as_samples(medians, "round_spread")
    return float(m.max() / m.min() - 1.0) if m.min() > 0 else math.inf


def kept_rounds(
    medians: ArrayLike,
    *,
    max_deviation: float = DEFAULT_MAX_ROUND_DEVIATION,
    max_fast_deviation: float = DEFAULT_MAX_FAST_DEVIATION,
) -> list[int]:
    """Indices of the rounds to pool, given the median of each round (times).

    With fewer than 3 rounds every round is kept: two rounds that disagree cannot say which
    one was disturbed. Otherwise the rounds whose median is furthest from the median of the
    round medians (|log ratio| > ``max_deviation``) are left out, at most a minority of them
    ((n - 1) // 2, so one of 3) and most extreme first; but when such a round is faster than
    the median by more than ``max_fast_deviation`` every round is kept (the others were the
    slowed ones). Rounds kept that still disagree are what ``round_spread`` and the
    ``noisy`` verdict are for.
    """
    m = _as_samples(medians, "kept_rounds")
    everything = list(range(m.size))
    if m.size < 3 or m.min() <= 0:
        return everything
    deviation = np.log(m / np.median(m))
    dropped: set[int] = set()
    for index in np.argsort(-np.abs(deviation), kind="stable")[: (m.size - 1) // 2]:
        if abs(deviation[index]) <= max_deviation:
            break
        if deviation[index] < -max_fast_deviation:
            return everything
        dropped.add(int(index))
    return [i for i in everything if i not in dropped]


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def mann_whitney_u(x: ArrayLike, y: ArrayLike) -> tuple[float, float]:
    """Two-sided Mann-Whitney U test: (U of ``x``, p-value).

    Normal approximation: mean n1*n2/2, variance n1*n2/12 * ((n+1) - sum(t^3 - t)/(n(n-1)))
    over tie groups of size t, and a continuity correction of 0.5.
    """
    a = _as_samples(x, "x")
    b = _as_samples(y, "y")
    n1, n2 = a.size, b.size
    n = n1 + n2
    ranks, ties = _average_ranks(np.concatenate([a, b]))
    u1 = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2.0)
    u2 = n1 * n2 - u1
    tie_term = float((ties.astype(np.float64) ** 3 - ties).sum()) / (n * (n - 1)) if n > 1 else 0.0
    variance = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if variance <= 0:  # every value identical: no evidence of a shift
        return u1, 1.0
    z = (max(u1, u2) - n1 * n2 / 2.0 - 0.5) / math.sqrt(variance)
    return u1, min(1.0, 2.0 * _normal_sf(z))


@dataclass(frozen=True)
class Decision:
    """How ``head`` compares to ``base`` for one case (times: a ratio above 1 is slower)."""

    ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    verdict: Verdict
    spread: float = 0.0  # the larger robust CV of the two sides


def decide(
    base: ArrayLike,
    head: ArrayLike,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    higher_is_better: bool = False,
    max_spread: float | None = DEFAULT_MAX_SPREAD,
    unstable: bool = False,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int | None = 0,
) -> Decision:
    """The verdict for ``head`` against ``base``.

    A change is called only when it is both significant (Mann-Whitney p < ``alpha``) and
    beyond the effect ``threshold`` (ratio of medians past 1 +/- threshold). Otherwise it is
    ``unchanged`` when the interval stays inside the threshold band, and ``noisy`` when the
    interval reaches past it: the data cannot rule a change of that size in or out. A side
    whose robust CV exceeds ``max_spread`` (a machine busy with other work) makes a change
    ``noisy`` too, as does ``unstable`` (the rounds of a run disagreed): rerun rather than
    trust it. So does a side of fewer than ``MIN_SAMPLES_FOR_INTERVAL`` samples, instead of
    ``unchanged``: its interval cannot be trusted to rule a change out.
    """
    if threshold < 0 or not 0 < alpha < 1:
        raise DataError(f"threshold must be >= 0 and alpha in (0, 1); got {threshold}, {alpha}")
    ratio, low, high = ratio_of_medians_ci(base, head, resamples=resamples, seed=seed)
    _, p_value = mann_whitney_u(base, head)
    spread = max(robust_cv(base), robust_cv(head))
    steady = not unstable and (max_spread is None or spread <= max_spread)
    upper, lower = 1.0 + threshold, 1.0 / (1.0 + threshold)
    too_few = min(np.size(base), np.size(head)) < MIN_SAMPLES_FOR_INTERVAL
    slower = p_value < alpha and ratio > upper
    faster = p_value < alpha and ratio < lower
    verdict: Verdict
    if (slower or faster) and steady:
        worse = slower != higher_is_better
        verdict = "regressed" if worse else "improved"
    elif slower or faster or high > upper or low < lower or too_few:
        verdict = "noisy"
    else:
        verdict = "unchanged"
    return Decision(
        ratio=ratio, ci_low=low, ci_high=high, p_value=p_value, verdict=verdict, spread=spread
    )
