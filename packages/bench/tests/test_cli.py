"""``torchsmith bench`` end to end: run, list, compare, report, export, import."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchsmith.bench import BenchStore
from torchsmith.bench._cli import main

BENCH_FILE = """
from torchsmith.bench import benchmark

@benchmark("cli.sum", params={"n": [10, 100]})
def total(n):
    data = list(range(n))
    return lambda: sum(data)
"""
pytestmark = pytest.mark.usefixtures("clean_registry")

FAST = [
    "--max-time",
    "0.02",
    "--min-samples",
    "3",
    "--max-samples",
    "4",
    "--quiet",
    "--rounds",
    "1",
    "--memory",
    "off",
]


@pytest.fixture
def bench_dir(tmp_path: Path) -> Path:
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "bench_cli.py").write_text(BENCH_FILE)
    return tmp_path / "benchmarks"


def test_run_list_compare_report(
    tmp_path: Path, bench_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "b.duckdb")
    assert main(["run", str(bench_dir), "--db", db, *FAST, "--label", "one"]) == 0
    assert "cli.sum[n=10]" in capsys.readouterr().out
    assert main(["run", str(bench_dir), "--db", db, *FAST, "--filter", "cli.*"]) == 0
    assert main(["list", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "one" in out and len([ln for ln in out.splitlines() if "results" in ln]) == 2
    assert main(["compare", "1", "2", "--db", db]) == 0
    assert "| `cli.sum[n=100]` |" in capsys.readouterr().out
    html, md = tmp_path / "r.html", tmp_path / "s.md"
    assert main(["report", "--db", db, "--html", str(html), "--markdown", str(md)]) == 0
    assert "Plotly" in html.read_text() and "Run 2 against run 1" in md.read_text()


def test_a_default_cpu_run_stores_peak_rss_and_the_calls_growth(tmp_path: Path) -> None:
    (tmp_path / "bench_grow.py").write_text(
        "from torchsmith.bench import benchmark\n"
        "@benchmark('grow')\n"
        "def grow():\n"
        "    return lambda: bytearray(32 * 2**20)\n"
    )
    db = tmp_path / "b.duckdb"
    fast = FAST[: FAST.index("--memory")]  # the default memory mode
    assert main(["run", str(tmp_path / "bench_grow.py"), "--db", str(db), *fast]) == 0
    with BenchStore(db, read_only=True) as store:
        (result,) = store.results(1)
    growth = result.extra["rss_growth_bytes"]
    assert result.peak_memory_bytes is not None and result.peak_memory_bytes > growth
    assert 30 * 2**20 <= growth < 200 * 2**20  # the 32 MiB the call allocates


def test_fail_on_regression_sets_the_exit_code(
    tmp_path: Path, make_result, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "b.duckdb"
    with BenchStore(db) as store:
        store.save_run([make_result("k", 1e-3)])
        store.save_run([make_result("k", 1.5e-3, seed=1)])
    assert main(["compare", "1", "2", "--db", str(db)]) == 0
    assert main(["compare", "1", "2", "--db", str(db), "--fail-on-regression"]) == 1
    assert "regressed: k" in capsys.readouterr().err
    md = tmp_path / "s.md"
    code = main(["report", "--db", str(db), "--markdown", str(md), "--fail-on-regression"])
    assert code == 1 and "regressed" in md.read_text()
    assert main(["compare", "2", "2", "--db", str(db), "--fail-on-regression"]) == 0
    assert main(["compare", "history", "latest", "--db", str(db), "--fail-on-regression"]) == 1


def test_fail_on_noisy_fails_what_could_not_be_decided(
    tmp_path: Path, make_result, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "b.duckdb"
    with BenchStore(db) as store:
        store.save_run([make_result("wide", 1e-3, spread=0.4), make_result("gone")])
        store.save_run([make_result("wide", 1.5e-3, spread=0.4, seed=1)])
        store.save_run([make_result("steady", 1e-3)])
        store.save_run([make_result("steady", 1e-3, seed=2)])
    argv = ["compare", "1", "2", "--db", str(db)]
    assert main([*argv, "--fail-on-regression"]) == 0  # nothing regressed: passes
    capsys.readouterr()
    assert main([*argv, "--fail-on-noisy"]) == 1
    assert "noisy or missing (rerun to decide): gone, wide" in capsys.readouterr().err
    assert main(["compare", "3", "4", "--db", str(db), "--fail-on-noisy"]) == 0


def test_export_then_import(
    tmp_path: Path, make_result, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    with BenchStore(source) as store:
        store.save_run([make_result()])
    out = tmp_path / "runs.parquet"
    assert main(["export", "latest", "--db", str(source), "--out", str(out)]) == 0
    assert main(["import", str(out), "--db", str(target)]) == 0
    assert "imported 1 runs" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--filter", "nothing-matches", "--no-entry-points"], "no benchmark matches"),
        (
            ["run", "--filter", "cli.sum", "--filter", "cli.summ", "--no-entry-points"],
            "did you mean cli.sum",
        ),
        (["compare", "1", "2"], "does not exist"),
        (["report"], "give --html"),
    ],
)
def test_errors_exit_2_with_a_message(
    tmp_path: Path,
    bench_dir: Path,
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    full = [*argv, "--db", str(tmp_path / "none.duckdb")]
    if argv[0] == "run":
        full.insert(1, str(bench_dir))
    assert main(full) == 2
    assert message in capsys.readouterr().err


def test_a_path_that_cannot_be_written_exits_2_not_1_the_regression_code(
    tmp_path: Path, bench_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "b.duckdb")
    assert main(["run", str(bench_dir), "--db", db, *FAST]) == 0
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "a_file").write_text("")
    capsys.readouterr()
    for argv in (
        ["report", "--db", db, "--html", str(tmp_path / "a_dir")],
        ["export", "latest", "--db", db, "--out", str(tmp_path / "a_file" / "x.json")],
        ["run", str(bench_dir), "--db", str(tmp_path / "a_file" / "x.duckdb"), *FAST],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"torchsmith bench {argv[0]}: error: ") and err.count("\n") == 1


def test_a_corrupt_database_is_reported_not_damaged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "bad.duckdb"
    db.write_bytes(b"junk" * 100)
    assert main(["list", "--db", str(db)]) == 2
    assert "may be corrupt" in capsys.readouterr().err
    assert db.read_bytes() == b"junk" * 100


@pytest.fixture
def truncated_db(tmp_path: Path, make_result) -> tuple[Path, Path]:
    """A real store cut to half its size, and a valid JSON export of its runs."""
    db, export = tmp_path / "cut.duckdb", tmp_path / "runs.json"
    with BenchStore(db) as store:
        for seed in range(3):
            store.save_run([make_result("k", 1e-3, seed=seed, n=2000)])
    assert main(["export", "1", "2", "--db", str(db), "--out", str(export)]) == 0
    with db.open("r+b") as handle:
        handle.truncate(db.stat().st_size // 2)
    return db, export


@pytest.mark.parametrize("argv", [["list"], ["compare", "1", "1"], ["import", "EXPORT"]])
def test_a_truncated_database_is_a_one_line_error_and_stays_as_it_was(
    truncated_db: tuple[Path, Path], argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, export = truncated_db
    before = db.read_bytes()
    capsys.readouterr()
    full = [str(export) if arg == "EXPORT" else arg for arg in argv]
    assert main([*full, "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(db) in err and "corrupt" in err
    assert db.read_bytes() == before


@pytest.mark.parametrize(
    ("base", "head", "message"),
    [
        ("history:abc", "latest", "bad base 'history:abc'"),
        ("history:0", "latest", "history:N"),
        ("latest~x", "latest", "bad run reference 'latest~x'"),
        ("latest~-1", "latest", "'latest~N'"),
        ("1", "", "empty run reference"),
        ("_", "latest", "no run matches '_'"),
    ],
)
def test_a_bad_run_reference_is_an_error_naming_it(
    tmp_path: Path,
    make_result,
    base: str,
    head: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = tmp_path / "b.duckdb"
    with BenchStore(db) as store:
        store.save_run([make_result()])
        store.save_run([make_result(seed=1)])
    before = db.read_bytes()
    assert main(["compare", base, head, "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert message in err and "latest~N" in err and len(err.strip().splitlines()) == 1
    assert db.read_bytes() == before


def test_a_bench_file_that_fails_to_import_names_its_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken, raising = tmp_path / "bench_broken.py", tmp_path / "bench_raising.py"
    broken.write_text("x = 1\ndef oops(:\n")
    raising.write_text("import math\n\nmath.sqrt(-1)\n")
    for path, line, kind in ((broken, 2, "SyntaxError"), (raising, 3, "ValueError")):
        db = tmp_path / "b.duckdb"
        assert main(["run", str(path), "--db", str(db), "--no-entry-points", *FAST]) == 2
        err = capsys.readouterr().err
        assert f"{path.resolve()}:{line}" in err and kind in err
        assert not db.exists()


def test_compare_history_honours_any_environment(
    tmp_path: Path, make_result, capsys: pytest.CaptureFixture[str]
) -> None:
    from torchsmith.interfaces import Environment

    db = tmp_path / "b.duckdb"
    with BenchStore(db) as store:
        store.save_run([make_result("k", 1e-3, env=Environment(fingerprint="ci-a"))])
        store.save_run([make_result("k", 1.5e-3, env=Environment(fingerprint="ci-b"))])
    argv = ["compare", "history", "latest", "--db", str(db), "--fail-on-regression"]
    assert main(argv) == 2
    assert "no earlier run in environment ci-b" in capsys.readouterr().err
    assert main([*argv, "--any-environment"]) == 1  # the ci-a run is the base now
    assert "regressed: k" in capsys.readouterr().err


def test_the_history_is_not_held_while_cases_are_timed(tmp_path: Path) -> None:
    """Only the run's save opens the database: meanwhile others read (and write) it."""
    import subprocess
    import sys
    import time

    bench = tmp_path / "bench_slow.py"
    started = tmp_path / "started"
    bench.write_text(
        "import time\n"
        "from pathlib import Path\n"
        "from torchsmith.bench import benchmark\n"
        "@benchmark('slow.sleep')\n"
        "def sleeper():\n"
        f"    Path({str(started)!r}).touch()\n"
        "    return lambda: time.sleep(0.01)\n"
    )
    db = tmp_path / "b.duckdb"
    with BenchStore(db):
        pass
    run = ["run", str(bench), "--db", str(db), "--no-entry-points", *FAST]
    run[run.index("0.02")] = "4"  # --max-time: the cases take seconds
    run[run.index("--max-samples") + 1] = "1000"
    code = "import sys; from torchsmith.bench._cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, *run])
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        with BenchStore(db, read_only=True) as store:
            assert store.runs() == []
        assert proc.poll() is None  # read while the cases were still being timed
    finally:
        assert proc.wait(timeout=120) == 0
    with BenchStore(db, read_only=True) as store:
        assert len(store.runs()) == 1


@pytest.mark.parametrize("rounds", ["1", "3"])
def test_a_failing_case_is_one_line_with_or_without_worker_rounds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rounds: str
) -> None:
    bench = tmp_path / "bench_boom.py"
    bench.write_text(
        "from torchsmith.bench import benchmark\n"
        "@benchmark('boom')\n"
        "def boom():\n"
        "    def fn():\n"
        "        raise RuntimeError('kaboom')\n"
        "    return fn\n"
    )
    argv = ["run", str(bench), "--db", str(tmp_path / "b.duckdb"), "--no-entry-points", *FAST]
    argv[argv.index("--rounds") + 1] = rounds
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == "torchsmith bench run: error: benchmark boom failed: RuntimeError: kaboom\n"
