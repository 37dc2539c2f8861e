"""Statistics against references: scipy's Mann-Whitney U, numpy medians, known coverage."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from torchsmith.bench import (
    bootstrap_median_ci,
    decide,
    mann_whitney_u,
    ratio_of_medians_ci,
    summarize,
)
from torchsmith.interfaces import DataError

# Few distinct values so ties are common: the tie correction is what is under test.
samples = st.lists(st.integers(0, 12).map(float), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(x=samples, y=samples)
def test_mann_whitney_matches_scipy_asymptotic(x: list[float], y: list[float]) -> None:
    u, p = mann_whitney_u(x, y)
    reference = scipy_stats.mannwhitneyu(
        x, y, alternative="two-sided", method="asymptotic", use_continuity=True
    )
    assert u == pytest.approx(reference.statistic)
    if np.isnan(reference.pvalue):  # scipy gives NaN when every value is tied
        assert p == 1.0
    else:
        assert p == pytest.approx(reference.pvalue, rel=1e-9, abs=1e-12)


def test_mann_whitney_on_continuous_data_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.lognormal(0, 0.1, 57), rng.lognormal(0.05, 0.1, 43)
    reference = scipy_stats.mannwhitneyu(x, y, method="asymptotic")
    assert mann_whitney_u(x, y) == pytest.approx((reference.statistic, reference.pvalue))


def test_summarize_agrees_with_numpy() -> None:
    x = np.random.default_rng(2).lognormal(0, 0.3, 101)
    s = summarize(x)
    assert s.n == 101
    assert s.median == pytest.approx(np.median(x))
    assert s.mean == pytest.approx(x.mean())
    assert s.stdev == pytest.approx(x.std(ddof=1))
    assert s.iqr == pytest.approx(np.subtract(*np.quantile(x, [0.75, 0.25])))
    assert (s.min, s.max) == (x.min(), x.max())
    assert s.ci_low is not None and s.ci_high is not None
    assert s.ci_low <= s.median <= s.ci_high


def test_bootstrap_median_interval_covers_the_true_median_about_95_percent() -> None:
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(200):
        low, high = bootstrap_median_ci(rng.normal(10.0, 1.0, 41), resamples=500, seed=rng)
        hits += low <= 10.0 <= high
    assert 0.88 <= hits / 200 <= 0.995


def test_ratio_interval_brackets_an_injected_ratio() -> None:
    rng = np.random.default_rng(4)
    base = rng.lognormal(0, 0.02, 50)
    head = 1.2 * rng.lognormal(0, 0.02, 50)
    ratio, low, high = ratio_of_medians_ci(base, head)
    assert low < 1.2 < high
    assert ratio == pytest.approx(np.median(head) / np.median(base))


@pytest.mark.parametrize(
    ("factor", "verdict"),
    [(1.0, "unchanged"), (1.10, "regressed"), (0.90, "improved"), (1.02, "unchanged")],
)
def test_decide_on_clear_cases(factor: float, verdict: str) -> None:
    rng = np.random.default_rng(5)
    base = rng.lognormal(0, 0.01, 40)
    head = factor * rng.lognormal(0, 0.01, 40)
    assert decide(base, head).verdict == verdict


def test_decide_calls_a_small_but_significant_shift_unchanged() -> None:
    rng = np.random.default_rng(6)
    base = rng.lognormal(0, 0.005, 200)
    head = 1.03 * rng.lognormal(0, 0.005, 200)
    decision = decide(base, head)
    assert decision.p_value < 1e-6  # clearly significant...
    assert decision.verdict == "unchanged"  # ...but within the 5% threshold


def test_too_few_samples_give_no_interval_and_no_unchanged_verdict() -> None:
    """Two to four samples' bootstrap interval covers the median 49-88% of the time."""
    assert summarize([3.0]).ci_low is None and summarize([1.0, 2.0, 3.0, 4.0]).ci_high is None
    assert summarize([1.0, 2.0, 3.0, 4.0, 5.0]).ci_low is not None
    rng = np.random.default_rng(8)
    many = rng.lognormal(0, 0.01, 100)
    assert decide(rng.lognormal(0, 0.01, 5), many).verdict == "unchanged"
    assert decide(rng.lognormal(0, 0.01, 4), many).verdict == "noisy"


def test_decide_calls_wide_data_noisy() -> None:
    rng = np.random.default_rng(7)
    base = rng.lognormal(0, 0.4, 6)
    head = rng.lognormal(0, 0.4, 6)
    assert decide(base, head).verdict == "noisy"


def test_higher_is_better_flips_the_verdict() -> None:
    base = np.linspace(100, 101, 30)
    head = base * 0.8
    assert decide(base, head).verdict == "improved"
    assert decide(base, head, higher_is_better=True).verdict == "regressed"


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [float("inf")]])
def test_bad_samples_raise_data_error(bad: list[float]) -> None:
    with pytest.raises(DataError, match="samples"):
        summarize(bad)


def test_decide_rejects_bad_settings() -> None:
    with pytest.raises(DataError, match="alpha"):
        decide([1.0, 2.0], [1.0, 2.0], alpha=1.5)


def test_kept_rounds_leaves_out_one_far_round_of_three_or_more() -> None:
    from torchsmith.bench._stats import kept_rounds

    assert kept_rounds([1.0, 1.37]) == [0, 1]  # two rounds cannot say which one is off
    assert kept_rounds([1.0, 1.01, 1.02]) == [0, 1, 2]  # within 3%: all kept
    assert kept_rounds([1.0, 1.076, 1.01]) == [0, 2]  # the +7.6% round
    assert kept_rounds([0.96, 1.0, 1.01]) == [1, 2]  # a round 4% fast too
    # 10% faster than the median: the other two were slowed, so nothing is left out.
    assert kept_rounds([0.9, 1.0, 1.01]) == [0, 1, 2]
    # At most a minority: of 3 only the most extreme, of 5 up to two.
    assert kept_rounds([1.0, 1.02, 1.4]) == [0, 1]
    assert kept_rounds([1.0, 1.01, 1.02, 1.3, 1.2]) == [0, 1, 2]
    assert kept_rounds([1.0, 1.01, 1.02, 1.3]) == [0, 1, 2]  # one of 4
    with pytest.raises(DataError, match="kept_rounds"):
        kept_rounds([])
