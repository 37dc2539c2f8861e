"""Change-point detection on synthetic step series."""

from __future__ import annotations

import numpy as np
import pytest

from torchsmith.bench import change_points
from torchsmith.interfaces import DataError


def _series(levels: list[tuple[int, float]], noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = np.concatenate([np.full(n, level) for n, level in levels])
    return values * np.exp(rng.normal(0.0, noise, values.size))


@pytest.mark.parametrize("seed", range(20))
def test_a_ten_percent_step_is_found_where_it_happened(seed: int) -> None:
    series = _series([(25, 1.0), (25, 1.10)], noise=0.02, seed=seed)
    found = change_points(series)
    assert len(found) == 1
    assert abs(found[0] - 25) <= 1


def test_two_steps_up_then_down_are_both_found() -> None:
    series = _series([(20, 1.0), (15, 1.25), (20, 0.95)], noise=0.02, seed=0)
    found = change_points(series)
    assert len(found) == 2
    assert abs(found[0] - 20) <= 1 and abs(found[1] - 35) <= 1


def test_flat_noisy_series_rarely_shows_a_step() -> None:
    false_steps = sum(
        bool(change_points(_series([(50, 1.0)], noise=0.02, seed=seed))) for seed in range(200)
    )
    assert false_steps <= 4  # <= 2%


def test_steps_below_the_effect_threshold_are_ignored() -> None:
    series = _series([(30, 1.0), (30, 1.03)], noise=0.002, seed=1)
    assert change_points(series, min_effect=0.05) == []
    assert change_points(series, min_effect=0.01) == [30]


def test_a_constant_series_and_a_short_one_have_no_steps() -> None:
    assert change_points([1.0] * 20) == []
    assert change_points([1.0, 2.0, 3.0]) == []
    assert change_points([1.0] * 10 + [2.0] * 10) == [10]


def test_non_positive_values_raise() -> None:
    with pytest.raises(DataError, match="positive"):
        change_points([1.0, 0.0, 1.0, 1.0])
