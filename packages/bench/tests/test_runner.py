"""Running cases: baselines side by side, failures, progress, memory, storing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from torchsmith.bench import (
    BenchStore,
    CaseError,
    MeasureConfig,
    Registry,
    benchmark,
    measure_cases,
    run,
)

if TYPE_CHECKING:
    from conftest import FakeClock

FAST = MeasureConfig(warmup_time=0.0, min_block_time=0.001, min_samples=5, max_samples=8,
                     max_time=0.05)  # fmt: skip


def _spin(seconds: float):
    def fn() -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    return fn


def test_a_case_is_timed_against_its_baseline(registry: Registry, clock: FakeClock) -> None:
    benchmark("slow_ref", params={"n": [1]}, registry=registry)(lambda n: clock.work(2e-4))
    benchmark("fast", params={"n": [1]}, baseline="slow_ref", registry=registry)(
        lambda n: clock.work(1e-4)
    )
    results = {r.case: r for r in measure_cases(["fast"], config=FAST, registry=registry)}
    assert set(results) == {"fast", "slow_ref"}
    fast = results["fast"]
    assert fast.baseline == "slow_ref[n=1]"
    assert fast.extra["baseline_ratio"] == pytest.approx(0.5)
    assert fast.extra["baseline_ratio_ci_low"] <= fast.extra["baseline_ratio"]
    assert len(results["slow_ref"].samples) == len(fast.samples)  # paired rounds


def test_a_baseline_run_alongside_is_measured_once(registry: Registry) -> None:
    benchmark("ref", registry=registry)(lambda: _spin(1e-5))
    benchmark("new", baseline="ref", registry=registry)(lambda: _spin(1e-5))
    results = measure_cases(["new", "ref"], config=FAST, registry=registry)
    assert sorted(r.case for r in results) == ["new", "ref"]


def test_a_baseline_sorting_first_is_measured_once_interleaved(
    registry: Registry, clock: FakeClock
) -> None:
    from torchsmith.bench import decide

    setups: list[str] = []

    def setup(name: str, seconds: float):
        setups.append(name)
        return clock.work(seconds, name)

    benchmark("a.ref", registry=registry)(lambda: setup("a.ref", 2e-4))
    benchmark("b.new", baseline="a.ref", registry=registry)(lambda: setup("b.new", 1e-4))
    measured = measure_cases(["a.ref", "b.new"], config=FAST, registry=registry, rounds=1,
                             memory="off")  # fmt: skip
    results = {r.case: r for r in measured}
    assert setups == ["b.new", "a.ref"]  # a.ref set up once, as b.new's baseline
    ref, new = results["a.ref"], results["b.new"]
    assert len(ref.samples) == len(new.samples)  # the interleaved measurement was stored
    assert new.extra["baseline_ratio"] == decide(ref.samples, new.samples).ratio
    assert ref.extra["rounds"] == new.extra["rounds"] == 1.0


def test_unknown_baseline_is_an_error_before_any_timing(registry: Registry) -> None:
    benchmark("orphan", baseline="nobody", registry=registry)(lambda: _spin(1e-5))
    with pytest.raises(KeyError, match="unknown benchmark 'nobody'"):
        measure_cases(["orphan"], config=FAST, registry=registry)


def test_a_failing_case_names_itself_and_stores_nothing(registry: Registry, db_path: Path) -> None:
    benchmark("ok", registry=registry)(lambda: _spin(1e-5))

    def broken(size: int):
        raise RuntimeError("setup exploded")

    benchmark("broken", params={"size": [3]}, registry=registry)(broken)
    with BenchStore(db_path) as store:
        with pytest.raises(CaseError, match=r"broken\[size=3\] failed: RuntimeError"):
            run(["ok", "broken"], store=store, config=FAST, registry=registry)
        assert store.runs() == []


def test_run_stores_and_reports_progress(registry: Registry, db_path: Path) -> None:
    benchmark("p", params={"batch_size": [2, 4]}, registry=registry)(lambda batch_size: _spin(1e-5))
    seen: list[tuple[str, int, int, int]] = []
    with BenchStore(db_path) as store:
        run_id = run(["p"], store=store, config=FAST, registry=registry,
                     on_progress=lambda *a: seen.append(a), label="t")  # fmt: skip
        results = store.results(run_id)
        assert store.run(run_id).label == "t"
    assert [r.params for r in results] == [{"batch_size": 2}, {"batch_size": 4}]
    assert all(r.extra["throughput"] > 0 for r in results)
    assert ("p[batch_size=2]", 1, 2, 0) in seen and ("p[batch_size=4]", 2, 2, 0) in seen
    assert any(samples > 0 for *_, samples in seen)


@pytest.mark.usefixtures("clean_registry")
def test_child_process_reports_peak_rss(tmp_path: Path) -> None:
    from torchsmith.bench import REGISTRY, discover

    (tmp_path / "bench_mem.py").write_text(
        "from torchsmith.bench import benchmark\n"
        "@benchmark('mem.alloc', params={'mib': [64]})\n"
        "def alloc(mib):\n"
        "    def fn():\n"
        "        block = bytearray(mib * 2**20)\n"
        "        block[::4096] = b'x' * len(block[::4096])\n"
        "    return fn\n"
    )
    discover([tmp_path])
    from torchsmith.bench._memory import child_peak_rss

    report = child_peak_rss(REGISTRY.get("mem.alloc"), {"mib": 64})
    assert report["peak_rss_bytes"] - report["setup_rss_bytes"] >= 60 * 2**20


@pytest.mark.usefixtures("clean_registry")
def test_a_case_that_prints_still_gets_its_peak_rss(tmp_path: Path) -> None:
    """The probe's report is alone on stdout: a case's prints (Python's, or a C library's
    writes to fd 1) go to stderr, and no longer abort the run with a JSONDecodeError."""
    from torchsmith.bench import REGISTRY, discover

    (tmp_path / "bench_print.py").write_text(
        "import os, sys\n"
        "from torchsmith.bench import benchmark\n"
        "@benchmark('mem.printer')\n"
        "def printer():\n"
        "    print('set up')\n"
        "    def fn():\n"
        "        sys.stdout.write('.')\n"
        "        os.write(1, b'{not json')\n"
        "    return fn\n"
    )
    discover([tmp_path])
    from torchsmith.bench._memory import child_peak_rss

    report = child_peak_rss(REGISTRY.get("mem.printer"), {})
    assert report["peak_rss_bytes"] >= report["setup_rss_bytes"] > 0


def test_auto_memory_skips_the_probe_for_a_case_a_child_cannot_import(
    registry: Registry, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    benchmark("local", registry=registry)(lambda: clock.work(1e-4))
    (result,) = measure_cases(["local"], config=FAST, registry=registry)
    assert result.peak_memory_bytes is None and "rss_growth_bytes" not in result.extra
    assert "peak RSS of local not measured" in caplog.text


def test_an_unknown_memory_mode_is_refused(registry: Registry) -> None:
    from torchsmith.interfaces import ConfigError

    benchmark("m", registry=registry)(lambda: lambda: None)
    with pytest.raises(ConfigError, match="memory must be one of auto, cuda, child, off"):
        measure_cases(["m"], config=FAST, registry=registry, memory="rss")  # type: ignore[arg-type]


@pytest.mark.usefixtures("clean_registry")
def test_rounds_pool_samples_from_worker_processes(tmp_path: Path) -> None:
    from torchsmith.bench import discover

    (tmp_path / "bench_rounds.py").write_text(
        "import os, random\n"
        "from torchsmith.bench import benchmark\n"
        "@benchmark('r.ref', params={'n': [500]})\n"
        "def ref(n):\n    data = random.Random(0).sample(range(n), n)\n"
        "    return lambda: sorted(data)\n"
        "@benchmark('r.new', params={'n': [500]}, baseline='r.ref')\n"
        "def new(n):\n    return lambda: list(range(n))\n"
        "@benchmark('r.pid')\n"
        "def pid():\n    return lambda: os.getpid()\n"
    )
    discover([tmp_path])
    seen: list[str] = []
    results = measure_cases(["r.new", "r.pid"], config=FAST, rounds=2, memory="off",
                            on_progress=lambda label, *_: seen.append(label))  # fmt: skip
    by_case = {r.case: r for r in results}
    assert set(by_case) == {"r.new", "r.ref", "r.pid"}
    for result in results:
        assert 2 * FAST.min_samples <= len(result.samples) <= 2 * FAST.max_samples
        assert result.statistics.n == len(result.samples)
    assert by_case["r.new"].extra["baseline_ratio"] < 1.0  # list(range) beats sorting, ~10x
    assert any(label.startswith("round 2/2: ") for label in seen)


def test_rounds_need_importable_cases(registry: Registry) -> None:
    from torchsmith.interfaces import ConfigError

    def local():
        return lambda: None

    local.__module__ = "__main__"
    benchmark("local", registry=registry)(local)
    with pytest.raises(ConfigError, match="not importable"):
        measure_cases(["local"], config=FAST, rounds=2, registry=registry)


def test_merge_rounds_leaves_a_disturbed_round_out_and_says_so(make_result) -> None:
    from torchsmith.bench._rounds import merge_rounds

    per_round = [
        [make_result("c", median, n=10, spread=0.005, seed=seed), make_result("d", 1e-3, seed=seed)]
        for seed, median in enumerate([1.00e-3, 1.30e-3, 1.01e-3])
    ]
    merged = {r.case: r for r in merge_rounds(per_round)}
    c, d = merged["c"], merged["d"]
    assert c.samples == per_round[0][0].samples + per_round[2][0].samples
    assert c.left_out_samples == per_round[1][0].samples  # stored, not in the statistics
    assert c.statistics.n == 20 and c.statistics.median < 1.02e-3
    assert c.statistics.max == max(c.samples) < min(c.left_out_samples)
    assert c.extra["rounds"] == 3 and c.extra["rounds_dropped"] == 1
    assert c.extra["dropped_round_ratio"] == pytest.approx(1.30 / 1.01, rel=0.02)
    assert c.extra["round_spread"] < 0.03  # over the kept rounds
    assert "rounds_dropped" not in d.extra and d.statistics.n == 90
    assert d.left_out_samples == []
    # Two rounds: both kept, the disagreement is left to the noisy verdict.
    both = merge_rounds(per_round[:2])[0]
    assert both.statistics.n == 20 and both.extra["round_spread"] > 0.25
    assert both.left_out_samples == []


def test_merge_rounds_keeps_left_out_samples_in_round_order(make_result) -> None:
    from torchsmith.bench._rounds import merge_rounds
    from torchsmith.bench._stats import summarize

    medians = [1.0e-3, 1.01e-3, 1.02e-3, 1.3e-3, 1.2e-3]  # rounds 3 and 4 are disturbed
    per_round = [[make_result("c", m, n=8, spread=0.005, seed=i)] for i, m in enumerate(medians)]
    (merged,) = merge_rounds(per_round)
    samples = [r[0].samples for r in per_round]
    assert merged.samples == samples[0] + samples[1] + samples[2]
    assert merged.left_out_samples == samples[3] + samples[4]
    assert merged.extra["rounds_dropped"] == 2
    assert merged.extra["dropped_round_ratio"] == pytest.approx(1.3 / 1.02, rel=0.02)
    assert merged.statistics == summarize(merged.samples)  # the kept rounds only
    assert merged.statistics.n == 24


@pytest.mark.usefixtures("clean_registry")
def test_rounds_default_to_three_worker_processes_for_importable_cases(tmp_path: Path) -> None:
    from torchsmith.bench import discover

    (tmp_path / "bench_three.py").write_text(
        "import os\nfrom torchsmith.bench import benchmark\n"
        "@benchmark('three.pid')\ndef pid():\n    return lambda: os.getpid()\n"
    )
    discover([tmp_path])
    (result,) = measure_cases(["three.pid"], config=FAST, memory="off")
    assert result.extra["rounds"] == 3.0
    assert 3 * FAST.min_samples <= len(result.samples) + len(result.left_out_samples)


def test_rounds_fall_back_to_one_with_a_warning_for_a_case_a_worker_cannot_import(
    registry: Registry, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    benchmark("here", registry=registry)(lambda: clock.work(1e-4))
    (result,) = measure_cases(["here"], config=FAST, registry=registry, memory="off")
    assert result.extra["rounds"] == 1.0 and FAST.min_samples <= len(result.samples)
    assert "timing in 1 round" in caplog.text and "here" in caplog.text
    caplog.clear()
    measure_cases(["here"], config=FAST, registry=registry, memory="off", rounds=1)
    assert "timing in 1 round" not in caplog.text  # asked for: no warning


def test_a_non_finite_extra_is_left_out_with_a_warning_and_the_run_stored(
    registry: Registry, clock: FakeClock, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def setup():
        fn = clock.work(1e-3)
        fn.extra = lambda: {"ok": 0.5, "bad": float("nan"), "huge": float("inf")}  # type: ignore[attr-defined]
        return fn

    benchmark("nan", registry=registry)(setup)
    with BenchStore(db_path) as store:
        run_id = run(["nan"], store=store, config=FAST, registry=registry, memory="off",
                     rounds=1)  # fmt: skip
        (result,) = store.results(run_id)
    assert result.extra["ok"] == 0.5 and "bad" not in result.extra and "huge" not in result.extra
    assert "benchmark nan: extra() gave non-finite bad=nan, huge=inf" in caplog.text


def test_an_extra_that_is_not_a_number_names_the_case(registry: Registry, clock: FakeClock) -> None:
    def setup():
        fn = clock.work(1e-3)
        fn.extra = lambda: {"label": "fast"}  # type: ignore[attr-defined]
        return fn

    benchmark("words", registry=registry)(setup)
    with pytest.raises(CaseError, match=r"benchmark words \(its extra\(\)\) failed: ValueError"):
        measure_cases(["words"], config=FAST, registry=registry, memory="off", rounds=1)
