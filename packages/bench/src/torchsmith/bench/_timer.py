"""Timing one callable, or two interleaved: warm-up, block calibration, adaptive repeats.

The scheme follows ``torch.utils.benchmark.Timer.blocked_autorange``: after a warm-up the
number of calls per sample (the *block*) grows until one block lasts ``min_block_time``,
so timer resolution and loop overhead vanish in the sample; samples are then taken until
``max_time`` has passed or the median is pinned down to ``target_spread``. CUDA work is
synchronised before the clock is started and before it is read.
"""

from __future__ import annotations

import gc
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from torchsmith.interfaces import ConfigError

Timed = Callable[[], object]
OnSample = Callable[[int], None]


@dataclass(frozen=True)
class MeasureConfig:
    """How long and how often to time a case. Defaults suit a laptop CPU."""

    warmup_time: float = 0.05  # seconds of untimed calls first (caches, allocator, JIT)
    min_block_time: float = 0.005  # one sample lasts at least this long
    min_samples: int = 10
    max_samples: int = 100
    max_time: float = 1.0  # seconds of sampling per case, once min_samples are taken
    target_spread: float = 0.005  # stop early once the median's 95% CI is within +/-0.5%; 0: off

    def __post_init__(self) -> None:
        checks = {
            "warmup_time": self.warmup_time >= 0,
            "min_block_time": self.min_block_time > 0,
            "min_samples": self.min_samples >= 2,
            "max_samples": self.max_samples >= self.min_samples,
            "max_time": self.max_time > 0,
            "target_spread": self.target_spread >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"MeasureConfig: invalid {', '.join(bad)} ({self})")


@dataclass
class Measurement:
    """Per-call seconds, one per sample, and the calls each sample averaged over."""

    samples: list[float] = field(default_factory=list)
    inner_loops: int = 1


def cuda_allocations() -> int:
    """How many CUDA allocations this process has made (0 while CUDA is not initialised).

    Work that uses CUDA has imported torch, so torch is not imported here for work that
    does not (a worker timing plain Python need not pay for it).
    """
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        return 0
    return int(torch.cuda.memory_stats().get("allocation.all.allocated", 0))


def cuda_in_use(since: int = 0) -> bool:
    """Whether the work uses CUDA: CUDA memory is held, or was allocated after ``since``.

    ``since`` is a ``cuda_allocations()`` count taken before the work ran. CUDA being
    initialised is not enough: anything may initialise it (a device-name query does), and
    an earlier case in the same process leaves it initialised for a CPU-only one.
    """
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return False
    if not torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        return False
    return torch.cuda.memory_allocated() > 0 or cuda_allocations() > since


def cuda_sync(since: int = 0) -> Callable[[], None]:
    """``torch.cuda.synchronize`` when the work uses CUDA (see ``cuda_in_use``), else a no-op."""
    if not cuda_in_use(since):
        return _no_sync
    import torch

    sync: Callable[[], None] = torch.cuda.synchronize
    return sync


def _no_sync() -> None:
    return None


def time_block(fn: Timed, number: int, sync: Callable[[], None]) -> float:
    """Seconds per call over ``number`` back-to-back calls, with the GC paused."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        sync()
        start = time.perf_counter()
        for _ in range(number):
            fn()
        sync()
        elapsed = time.perf_counter() - start
    finally:
        if enabled:
            gc.enable()
    return elapsed / number


def warm_up(fn: Timed, seconds: float) -> None:
    fn()  # at least once, even when seconds == 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        fn()


def calibrate(fn: Timed, min_block_time: float, sync: Callable[[], None]) -> int:
    """Calls per block so that one block lasts at least ``min_block_time``."""
    number = 1
    while True:
        per_call = time_block(fn, number, sync)
        if per_call * number >= min_block_time:
            return number
        # Aim 20% past the target from what this block showed; grow at most 100x a step.
        wanted = math.ceil(1.2 * min_block_time / max(per_call, 1e-9))
        number = min(max(number * 2, wanted), number * 100)


def median_half_width(samples: list[float]) -> float:
    """Half-width of a distribution-free 95% interval of the median, relative to it.

    Uses the order statistics at ranks (n -/+ 1.96 sqrt(n)) / 2, which needs no resampling
    and so is cheap enough to check after every sample.
    """
    n = len(samples)
    if n < 3:
        return math.inf
    ordered = sorted(samples)
    k = max(0, math.floor((n - 1.96 * math.sqrt(n)) / 2))
    median = ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])
    if median <= 0:
        return math.inf
    return (ordered[n - 1 - k] - ordered[k]) / 2 / median


def _done(samples: list[float], started: float, config: MeasureConfig, scale: int = 1) -> bool:
    n = len(samples)
    if n >= config.max_samples:
        return True
    if n < config.min_samples:
        return False
    if time.perf_counter() - started >= config.max_time * scale:
        return True
    return config.target_spread > 0 and median_half_width(samples) <= config.target_spread


def measure(
    fn: Timed, config: MeasureConfig | None = None, on_sample: OnSample | None = None
) -> Measurement:
    """Warm up, calibrate, then sample ``fn`` until the config says stop."""
    config = config or MeasureConfig()
    before = cuda_allocations()
    warm_up(fn, config.warmup_time)
    sync = cuda_sync(before)
    result = Measurement(inner_loops=calibrate(fn, config.min_block_time, sync))
    started = time.perf_counter()
    while not _done(result.samples, started, config):
        result.samples.append(time_block(fn, result.inner_loops, sync))
        if on_sample is not None:
            on_sample(len(result.samples))
    return result


def measure_interleaved(
    fn_a: Timed,
    fn_b: Timed,
    config: MeasureConfig | None = None,
    on_sample: OnSample | None = None,
) -> tuple[Measurement, Measurement]:
    """Time two callables in alternating rounds (A B A B ...) so drift hits both alike."""
    config = config or MeasureConfig()
    before = cuda_allocations()
    warm_up(fn_a, config.warmup_time)
    warm_up(fn_b, config.warmup_time)
    sync = cuda_sync(before)
    a = Measurement(inner_loops=calibrate(fn_a, config.min_block_time, sync))
    b = Measurement(inner_loops=calibrate(fn_b, config.min_block_time, sync))
    started = time.perf_counter()
    # Two callables share the clock: each gets the time budget one would get alone.
    while not (
        _done(a.samples, started, config, scale=2) and _done(b.samples, started, config, scale=2)
    ):
        a.samples.append(time_block(fn_a, a.inner_loops, sync))
        b.samples.append(time_block(fn_b, b.inner_loops, sync))
        if on_sample is not None:
            on_sample(len(a.samples))
    return a, b
