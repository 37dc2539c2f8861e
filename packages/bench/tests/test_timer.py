"""The timer on a fake clock: calibration, stopping rules, interleaving, CUDA sync order."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pytest

from torchsmith.bench import MeasureConfig, measure, measure_interleaved
from torchsmith.bench import _timer as timer
from torchsmith.interfaces import ConfigError

if TYPE_CHECKING:
    from conftest import FakeClock


def test_calibration_makes_one_block_last_the_minimum(clock: FakeClock) -> None:
    fn = clock.work(1e-6)
    number = timer.calibrate(fn, min_block_time=0.005, sync=lambda: None)
    assert number * 1e-6 >= 0.005
    assert number * 1e-6 < 0.005 * 3  # not wildly past it


def test_a_slow_call_needs_no_inner_loop(clock: FakeClock) -> None:
    assert timer.calibrate(clock.work(0.1), min_block_time=0.005, sync=lambda: None) == 1


def test_samples_are_seconds_per_call(clock: FakeClock) -> None:
    result = measure(clock.work(2e-6), MeasureConfig(max_samples=12, min_samples=10))
    assert 10 <= len(result.samples) <= 12
    assert result.samples == pytest.approx([2e-6] * len(result.samples))
    assert result.inner_loops * 2e-6 >= MeasureConfig().min_block_time


def test_sampling_stops_at_max_time(clock: FakeClock) -> None:
    config = MeasureConfig(min_samples=2, max_samples=10_000, max_time=0.5, target_spread=0.0)
    result = measure(clock.work(0.05), config)
    assert len(result.samples) == 10  # 0.5 s of 0.05 s samples


def test_sampling_stops_early_once_the_median_is_pinned_down(clock: FakeClock) -> None:
    config = MeasureConfig(min_samples=5, max_samples=1000, max_time=100, target_spread=0.01)
    result = measure(clock.work(0.01), config)  # identical samples: zero spread
    assert len(result.samples) == 5


def test_interleaved_rounds_alternate(clock: FakeClock) -> None:
    config = MeasureConfig(warmup_time=0.0, min_samples=4, max_samples=4, min_block_time=0.001)
    a, b = measure_interleaved(clock.work(0.01, "a"), clock.work(0.02, "b"), config)
    assert len(a.samples) == len(b.samples) == 4
    timed = clock.log[-8:]  # after warm-up and calibration: one call per sample each
    assert timed == ["a", "b"] * 4
    assert np.median(b.samples) / np.median(a.samples) == pytest.approx(2.0)


def test_cuda_sync_brackets_the_clock(clock: FakeClock) -> None:
    events: list[str] = []

    def sync() -> None:
        events.append("sync")

    def fn() -> None:
        events.append("call")

    timer.time_block(fn, 3, sync)
    assert events == ["sync", "call", "call", "call", "sync"]


def test_median_half_width_of_known_samples() -> None:
    samples = [float(v) for v in range(1, 101)]  # median 50.5
    n = 100
    k = math.floor((n - 1.96 * math.sqrt(n)) / 2)
    expected = (samples[n - 1 - k] - samples[k]) / 2 / 50.5
    assert timer.median_half_width(samples) == pytest.approx(expected)
    assert timer.median_half_width([1.0, 2.0]) == math.inf


@pytest.mark.parametrize(
    "bad", [{"min_samples": 1}, {"max_samples": 3, "min_samples": 5}, {"max_time": 0}]
)
def test_bad_config_names_the_field(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match=next(iter(bad))):
        MeasureConfig(**bad)  # type: ignore[arg-type]


def test_real_clock_times_real_work() -> None:
    calls = 0

    def fn() -> None:
        nonlocal calls
        calls += 1
        sum(range(200))

    result = measure(fn, MeasureConfig(warmup_time=0.0, max_time=0.05, max_samples=10))
    assert len(result.samples) == 10  # min_samples = max_samples = 10
    assert result.inner_loops > 1  # a ~2 us call needs many calls per 5 ms block
    assert calls >= 10 * result.inner_loops  # every sample made its calls
    # Seconds per call, not per block: sum(range(200)) takes microseconds.
    assert all(1e-7 < s < 1e-3 for s in result.samples)
