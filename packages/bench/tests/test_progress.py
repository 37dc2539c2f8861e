"""Progress off a terminal: plain lines, written while the run is still going."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import pytest
from rich.console import Console

from torchsmith.bench import BenchStore, MeasureConfig, Registry, benchmark, run
from torchsmith.bench._progress import live_progress

if TYPE_CHECKING:
    from pathlib import Path

    from conftest import FakeClock

FAST = MeasureConfig(warmup_time=0.0, min_block_time=0.001, min_samples=5, max_samples=5,
                     max_time=0.05)  # fmt: skip


def test_off_a_terminal_each_case_prints_a_start_and_a_finish_line_at_once() -> None:
    out = io.StringIO()
    with live_progress(console=Console(file=out, width=200)) as update:
        update("a[n=1]", 0, 2, 0)
        assert out.getvalue() == "[1/2] a[n=1]: started\n"
        update("a[n=1]", 0, 2, 7)
        update("a[n=1]", 1, 2, 0)
        assert out.getvalue().splitlines()[-1] == "[1/2] a[n=1]: 7 samples"
        update("b", 1, 2, 0)
        assert out.getvalue().splitlines()[-1] == "[2/2] b: started"


def test_run_with_progress_writes_lines_to_stderr_while_measuring(
    registry: Registry, clock: FakeClock, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    benchmark("first", registry=registry)(lambda: clock.work(1e-3))
    benchmark("second", registry=registry)(lambda: clock.work(1e-3))
    seen_mid_run: list[str] = []

    def peek(label: str, done: int, total: int, samples: int) -> None:
        if label == "second" and samples == 0 and done == 1:  # the second case starts
            seen_mid_run.append(capsys.readouterr().err)

    with BenchStore(db_path) as store:
        run(["first", "second"], store=store, config=FAST, registry=registry, memory="off",
            progress=True, on_progress=peek)  # fmt: skip
    (err,) = seen_mid_run
    assert "[1/2] first: started" in err and "[1/2] first: 5 samples" in err
    assert "[2/2] second: started" in err
    assert "[2/2] second: 5 samples" in capsys.readouterr().err
