"""Comparing stored runs, environments, and a case's history with its steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchsmith.bench import (
    BenchStore,
    ComparisonError,
    StoreError,
    compare,
    compare_history,
    compare_results,
    history,
)
from torchsmith.interfaces import Environment


def test_verdicts_per_case(make_result) -> None:
    base = [make_result("same", 1e-3, seed=1), make_result("slower", 1e-3, seed=2),
            make_result("faster", 1e-3, seed=3), make_result("gone", seed=4)]  # fmt: skip
    head = [make_result("same", 1e-3, seed=5), make_result("slower", 1.2e-3, seed=6),
            make_result("faster", 0.8e-3, seed=7), make_result("added", seed=8)]  # fmt: skip
    result = compare_results(base, head)
    verdicts = {row.key: row.verdict for row in result.rows}
    assert verdicts == {"same": "unchanged", "slower": "regressed", "faster": "improved",
                        "gone": "missing", "added": "new"}  # fmt: skip
    assert [row.key for row in result.regressions] == ["slower"]
    slower = next(row for row in result.rows if row.key == "slower")
    assert slower.ci_low is not None and slower.ci_low < slower.ratio < slower.ci_high
    assert slower.ratio == pytest.approx(1.2, rel=0.03)
    assert result.counts == {"unchanged": 1, "regressed": 1, "improved": 1, "missing": 1, "new": 1}


def test_sides_timed_in_different_rounds_are_compared_with_a_warning(make_result) -> None:
    from torchsmith.bench import markdown_summary

    def timed(rounds: float | None, seed: int):
        result = make_result("m", seed=seed)
        if rounds is not None:
            result.extra["rounds"] = rounds
        return result

    (note,) = compare_results([timed(3.0, 1)], [timed(1.0, 2)]).notes
    assert note.startswith("base was timed in 3 round(s), head in 1: fewer rounds")
    markdown = markdown_summary([timed(1.0, 2)], compare_results([timed(3.0, 1)], [timed(1.0, 2)]))
    assert f"> ⚠️ {note}" in markdown
    assert compare_results([timed(3.0, 1)], [timed(3.0, 2)]).notes == []
    assert compare_results([timed(None, 1)], [timed(1.0, 2)]).notes == []  # stored before


def test_rounds_are_compared_case_by_case(make_result) -> None:
    def timed(case: str, rounds: float):
        result = make_result(case)
        result.extra["rounds"] = rounds
        return result

    base = [timed("a", 3.0), timed("b", 1.0), timed("c", 3.0)]
    head = [timed("a", 1.0), timed("b", 3.0), timed("c", 3.0)]  # the same set of counts
    notes = compare_results(base, head).notes
    assert [note.split(":")[0] for note in notes] == [
        "base was timed in 1 round(s), head in 3 for 1 of 3 cases (b)",
        "base was timed in 3 round(s), head in 1 for 1 of 3 cases (a)",
    ]


def test_a_side_of_too_few_samples_shows_no_ratio_interval(make_result) -> None:
    (row,) = compare_results([make_result("m", n=4)], [make_result("m", n=30, seed=1)]).rows
    assert row.ratio is not None and (row.ci_low, row.ci_high) == (None, None)
    assert row.verdict == "noisy"


def test_parameters_are_part_of_the_case_identity(make_result) -> None:
    base = [make_result("m", params={"n": 1}), make_result("m", 2e-3, params={"n": 2})]
    head = [make_result("m", params={"n": 1}, seed=1), make_result("m", 2e-3, params={"n": 2})]
    assert [row.key for row in compare_results(base, head).rows] == ["m[n=1]", "m[n=2]"]


def test_runs_from_other_environments_need_permission(db_path: Path, make_result) -> None:
    elsewhere = Environment(fingerprint="other-machine")
    with BenchStore(db_path) as store:
        a = store.save_run([make_result("x")])
        b = store.save_run([make_result("x", env=elsewhere)])
        with pytest.raises(ComparisonError, match=r"different environments.*any_environment"):
            compare(store, a, b)
        result = compare(store, a, b, any_environment=True)
        assert result.base is not None and result.base.run_id == a
        assert [row.verdict for row in result.rows] == ["unchanged"]


def test_history_marks_the_commit_of_a_step(db_path: Path, make_result) -> None:
    with BenchStore(db_path) as store:
        for i in range(16):
            commit = f"c{i:02d}"
            median = 1e-3 if i < 8 else 1.2e-3
            env = Environment(fingerprint="fp-test", git_commit=commit)
            store.save_run([make_result("h", median, seed=i, spread=0.01, env=env)])
        store.save_run([make_result("h", 5e-3, env=Environment(fingerprint="elsewhere"))])
        series = history(store, "h", fingerprint="fp-test")
    assert len(series.points) == 16
    assert series.steps == [8]
    assert series.step_commits == ["c08"]


def test_a_run_against_its_pooled_history(db_path: Path, make_result) -> None:
    with BenchStore(db_path) as store:
        first = store.save_run([make_result("h", 5e-3, seed=99)])  # outside the window
        for seed in range(4):
            store.save_run([make_result("h", 1e-3, seed=seed)])
        store.save_run([make_result("h", 1e-3, env=Environment(fingerprint="elsewhere"))])
        slower = store.save_run([make_result("h", 1.2e-3, seed=10)])
        result = compare_history(store, slower, window=4)
        assert result.base_name == "the last 4 runs (pooled)"
        (row,) = result.rows
        assert row.verdict == "regressed"
        assert row.base_median == pytest.approx(1e-3, rel=0.02)  # 4 runs pooled, not the 5e-3
        assert row.ratio == pytest.approx(1.2, rel=0.03)
        with pytest.raises(ComparisonError, match="no earlier run"):
            compare_history(store, first)
        with pytest.raises(StoreError, match="give fingerprint="):
            history(store, "h")


def test_a_history_of_one_run_decides_as_comparing_with_that_run(
    db_path: Path, make_result
) -> None:
    """The one earlier run's rounds disagreed: both ways of comparing call the change noisy."""
    unsteady = make_result("u", 1e-3, seed=1)
    unsteady.extra["round_spread"] = 0.2
    with BenchStore(db_path) as store:
        base = store.save_run([unsteady])
        head = store.save_run([make_result("u", 0.8e-3, seed=2)])
        (direct,) = compare(store, base, head).rows
        (pooled,) = compare_history(store, head).rows
    assert direct.verdict == pooled.verdict == "noisy"


def test_stored_left_out_samples_take_no_part_in_decisions(db_path: Path, make_result) -> None:
    def run_with_a_slow_left_out_round(seed: int):
        result = make_result("r", 1e-3, seed=seed)
        result.left_out_samples = make_result("r", 1.5e-3, seed=seed + 100).samples
        return [result]

    with BenchStore(db_path) as store:
        ids = [store.save_run(run_with_a_slow_left_out_round(seed)) for seed in range(3)]
        (row,) = compare(store, ids[0], ids[1]).rows
        (pooled,) = compare_history(store, ids[2], window=2).rows
    for decided in (row, pooled):
        assert decided.verdict == "unchanged"
        assert decided.base_median == pytest.approx(1e-3, rel=0.02)  # not pulled toward 1.5e-3
        assert decided.ratio == pytest.approx(1.0, abs=0.03)
