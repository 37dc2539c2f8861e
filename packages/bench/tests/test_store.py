"""The DuckDB store: round trips, ids, transactions, migrations, refusing bad files."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from torchsmith.bench import BenchStore, StoreError
from torchsmith.bench import _store as store_module
from torchsmith.bench._schema import MIGRATIONS, SCHEMA_VERSION
from torchsmith.interfaces import Environment, SchemaVersionError


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _counts(path: Path) -> dict[str, int]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = ("runs", "cases", "summaries", "samples")
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    finally:
        con.close()


def test_a_run_round_trips_with_every_sample(db_path: Path, make_result) -> None:
    results = [make_result("a", 1e-3, params={"n": 2}), make_result("b", 5e-3, seed=1)]
    with BenchStore(db_path) as store:
        run_id = store.save_run(results, label="first")
    with BenchStore(db_path, read_only=True) as store:
        back = store.results(run_id)
        info = store.run(run_id)
    assert [r.model_dump() for r in back] == [r.model_dump() for r in results]
    assert info.label == "first" and info.n_results == 2
    assert info.environment == results[0].environment


def test_left_out_samples_are_stored_flagged_and_read_back_apart(
    db_path: Path, make_result
) -> None:
    with_left_out = make_result("a", 1e-3, n=20)
    with_left_out.left_out_samples = [1.4e-3, 1.3e-3, 1.5e-3]
    plain = make_result("b", 2e-3, n=12, seed=1)
    with BenchStore(db_path) as store:
        run_id = store.save_run([with_left_out, plain])
        back = {r.case: r for r in store.results(run_id)}
    assert back["a"].samples == with_left_out.samples  # same values, same order
    assert back["a"].left_out_samples == [1.4e-3, 1.3e-3, 1.5e-3]
    assert back["a"].statistics == with_left_out.statistics  # those of the kept samples
    assert back["b"].left_out_samples == [] and back["b"].samples == plain.samples
    assert _counts(db_path)["samples"] == 20 + 3 + 12  # every sample has a row
    con = duckdb.connect(str(db_path), read_only=True)
    flags = con.execute(
        "SELECT kept, count(*), max(idx) FROM samples JOIN summaries USING (result_id)"
        " WHERE n = 20 GROUP BY kept ORDER BY kept"
    ).fetchall()
    stored_n = con.execute("SELECT n FROM summaries ORDER BY n").fetchall()
    con.close()
    assert flags == [(False, 3, 22), (True, 20, 19)]  # left-out ones follow the kept ones
    assert stored_n == [(12,), (20,)]


def test_ids_come_from_sequences_and_cases_are_shared(db_path: Path, make_result) -> None:
    with BenchStore(db_path) as store:
        first = store.save_run([make_result("a")])
        second = store.save_run([make_result("a", seed=2)])
        assert second == first + 1
        assert [key for key, _, _ in store.cases()] == ["a"]
        assert [p.run_id for p in store.history("a", fingerprint="fp-test")] == [first, second]


def test_history_needs_a_fingerprint_unless_any_environment_is_asked(
    db_path: Path, make_result
) -> None:
    with BenchStore(db_path) as store:
        here = store.save_run([make_result("a")])
        there = store.save_run([make_result("a", env=Environment(fingerprint="other"))])
        with pytest.raises(StoreError, match="give fingerprint="):
            store.history("a")
        assert [p.run_id for p in store.history("a", fingerprint="other")] == [there]
        assert [p.run_id for p in store.history("a", any_environment=True)] == [here, there]


def test_a_failure_mid_write_leaves_no_half_run(
    db_path: Path, make_result, monkeypatch: pytest.MonkeyPatch
) -> None:
    with BenchStore(db_path) as store:
        store.save_run([make_result("kept")])
    before = _counts(db_path)
    calls = {"n": 0}
    real = store_module._insert_samples

    def failing(con, result_id, kept, left_out):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk on fire")
        return real(con, result_id, kept, left_out)

    monkeypatch.setattr(store_module, "_insert_samples", failing)
    with BenchStore(db_path) as store, pytest.raises(RuntimeError, match="disk on fire"):
        store.save_run([make_result("new1"), make_result("new2"), make_result("new3")])
    assert calls["n"] == 2  # the first result was written inside the transaction...
    assert _counts(db_path) == before  # ...and rolled back with the rest


def test_a_process_killed_mid_write_leaves_no_half_run(db_path: Path, make_result) -> None:
    with BenchStore(db_path) as store:
        store.save_run([make_result("kept")])
    before = _counts(db_path)
    script = textwrap.dedent(f"""
        import os
        from torchsmith.bench import BenchStore
        store = BenchStore({str(db_path)!r})
        con = store._con
        con.execute("BEGIN TRANSACTION")
        con.execute("INSERT INTO runs (uid, created_at, fingerprint, environment)"
                    " VALUES ('half', now(), 'fp', '{{}}')")
        os._exit(9)  # no commit, no close: as if killed
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert done.returncode == 9, done.stderr
    assert _counts(db_path) == before
    with BenchStore(db_path) as store:
        assert "half" not in {r.uid for r in store.runs()}


def test_a_newer_schema_is_refused_and_the_file_untouched(db_path: Path, make_result) -> None:
    with BenchStore(db_path) as store:
        store.save_run([make_result()])
    con = duckdb.connect(str(db_path))
    con.execute("INSERT INTO schema_version (version) VALUES (?)", [SCHEMA_VERSION + 1])
    con.close()
    digest = _digest(db_path)
    with pytest.raises(SchemaVersionError, match=f"version {SCHEMA_VERSION + 1}, newer than"):
        BenchStore(db_path)
    assert _digest(db_path) == digest


def test_a_corrupt_file_is_a_clear_error_and_untouched(db_path: Path) -> None:
    db_path.write_bytes(b"\x00garbage" * 512)
    digest = _digest(db_path)
    with pytest.raises(StoreError, match=r"may be corrupt.*was not changed"):
        BenchStore(db_path)
    assert _digest(db_path) == digest


def test_another_programs_duckdb_file_is_refused(db_path: Path) -> None:
    con = duckdb.connect(str(db_path))
    con.execute("CREATE TABLE orders (id INTEGER)")
    con.close()
    with pytest.raises(StoreError, match=r"not a torchsmith-bench one.*orders"):
        BenchStore(db_path)


def test_a_version_1_database_is_migrated_forward_keeping_its_runs(db_path: Path) -> None:
    con = duckdb.connect(str(db_path))
    for statement in MIGRATIONS[1]:
        con.execute(statement)
    con.execute("INSERT INTO schema_version (version) VALUES (1)")
    env = Environment(fingerprint="old").model_dump_json()
    con.execute("INSERT INTO runs (uid, created_at, fingerprint, environment) "
                "VALUES ('u1', now(), 'old', ?)", [env])  # fmt: skip
    con.close()
    with pytest.raises(StoreError, match="open it writable once to migrate"):
        BenchStore(db_path, read_only=True)
    with BenchStore(db_path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert [r.uid for r in store.runs()] == ["u1"]
        assert store.results(store.runs()[0].run_id) == []


def test_resolve_run_accepts_ids_latest_uids_and_commits(db_path: Path, make_result) -> None:
    other = Environment(fingerprint="fp2", git_commit="ffee001")
    with BenchStore(db_path) as store:
        a = store.save_run([make_result()], uid="aaaa1111")
        b = store.save_run([make_result(env=other)], uid="bbbb2222")
        assert store.resolve_run(str(a)) == a
        assert store.resolve_run("latest") == b
        assert store.resolve_run("latest~1") == a
        assert store.resolve_run("aaaa") == a
        assert store.resolve_run("ffee") == b
        assert [r.run_id for r in store.runs(fingerprint="fp2")] == [b]
        with pytest.raises(StoreError, match="no run matches 'zzz'"):
            store.resolve_run("zzz")
        with pytest.raises(StoreError, match="no run 99"):
            store.run(99)
        digits = Environment(fingerprint="fp2", git_commit="4821907e5")
        c = store.save_run([make_result(env=digits)], uid="cccc3333")
        assert store.resolve_run("4821907") == c  # a commit prefix of digits only
        assert store.resolve_run(str(c)) == c  # a run id, where one exists, comes first
        with pytest.raises(StoreError, match="no run matches '12345678'"):
            store.resolve_run("12345678")
        with pytest.raises(StoreError, match="already in"):
            store.save_run([make_result()], uid="aaaa1111")


def test_an_ambiguous_run_reference_is_refused_but_a_commits_runs_are_one(
    db_path: Path, make_result
) -> None:
    commit = Environment(fingerprint="fp2", git_commit="abc1234")
    with BenchStore(db_path) as store:
        first = store.save_run([make_result(env=commit)], uid="abd99999")
        again = store.save_run([make_result(env=commit)], uid="ffff0000")
        assert store.resolve_run("abc") == again  # two runs of one commit: the newest
        assert store.resolve_run("abd") == first
        with pytest.raises(StoreError, match="'ab' is ambiguous") as refused:
            store.resolve_run("ab")  # a uid and a commit
        assert "commit abc1234 (run 2), uid abd99999 (run 1)" in str(refused.value)
        assert str(db_path) not in str(refused.value)  # a server shows it to its clients
        store.save_run([make_result()], uid="abd88888")
        with pytest.raises(StoreError, match="'abd' is ambiguous"):
            store.resolve_run("abd")  # two uids
        assert store.resolve_run("abd9") == first
        # A uid and a commit that name the same run are one reading.
        newest = store.save_run([make_result(env=commit)], uid="abc99999")
        assert store.resolve_run("abc") == newest


def test_missing_database_opened_read_only_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        BenchStore(tmp_path / "none.duckdb", read_only=True)


def _version_2_database(path: Path) -> None:
    """A bench database as torchsmith-bench wrote it at schema 2, holding one run."""
    con = duckdb.connect(str(path))
    for version in (1, 2):
        for statement in MIGRATIONS[version]:
            con.execute(statement)
        con.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
    env = Environment(fingerprint="old").model_dump_json()
    con.execute("INSERT INTO runs (uid, created_at, fingerprint, environment) "
                "VALUES ('u2', '2026-01-02 03:04:05', 'old', ?)", [env])  # fmt: skip
    con.execute("INSERT INTO cases (key, name, params) VALUES ('c', 'c', '{}')")
    con.execute(
        "INSERT INTO summaries (run_id, case_id, unit, inner_loops, n, median, mean, stdev,"
        " iqr, min, max, extra) VALUES (1, 1, 's', 4, 3, 2.0, 2.0, 1.0, 1.0, 1.0, 3.0,"
        " '{\"rounds\": 3.0}')"
    )
    con.execute("INSERT INTO samples VALUES (1, 0, 3.0), (1, 1, 1.0), (1, 2, 2.0)")
    con.close()


def test_a_version_2_database_migrates_and_its_samples_count_as_kept(db_path: Path) -> None:
    _version_2_database(db_path)
    with BenchStore(db_path) as store:
        assert store.schema_version() == SCHEMA_VERSION == 3
        (run,) = store.runs()
        (result,) = store.results(run.run_id)
        store.save_run([result.model_copy(update={"left_out_samples": [9.0]})], uid="new")
    assert (run.uid, run.environment.fingerprint) == ("u2", "old")
    assert result.samples == [3.0, 1.0, 2.0] and result.left_out_samples == []
    assert (result.inner_loops, result.statistics.median, result.extra) == (4, 2.0, {"rounds": 3.0})
    con = duckdb.connect(str(db_path), read_only=True)
    kept = con.execute("SELECT kept, count(*) FROM samples GROUP BY kept ORDER BY kept")
    assert kept.fetchall() == [(False, 1), (True, 6)]  # the old run's 3 + the new run's 3
    con.close()


def test_a_failing_migration_leaves_the_version_2_database_as_it_was(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _version_2_database(db_path)
    broken = (*MIGRATIONS[3], "SELECT * FROM no_such_table")
    monkeypatch.setitem(store_module.MIGRATIONS, 3, broken)
    with pytest.raises(StoreError, match=r"migrating schema 2 to 3 failed.*no_such_table"):
        BenchStore(db_path)
    con = duckdb.connect(str(db_path), read_only=True)
    columns = [row[0] for row in con.execute("DESCRIBE samples").fetchall()]
    version = con.execute("SELECT max(version) FROM schema_version").fetchone()
    con.close()
    assert columns == ["result_id", "idx", "value"] and version == (2,)
    monkeypatch.undo()
    with BenchStore(db_path) as store:  # the real migration still applies afterwards
        assert store.schema_version() == 3
        assert store.results(store.runs()[0].run_id)[0].samples == [3.0, 1.0, 2.0]


def _holder(path: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process holding ``path`` open for writing, for ``seconds``."""
    code = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True)"
    code += "; time.sleep(float(sys.argv[2]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def test_opening_waits_for_another_processs_brief_hold(db_path: Path, make_result) -> None:
    with BenchStore(db_path) as store:
        store.save_run([make_result("a")], environment=Environment(fingerprint="f"))
    holder = _holder(db_path, 1.0)
    with BenchStore(db_path) as store:  # waits for the holder to let go, as a run's save does
        assert len(store.runs()) == 1
    holder.wait(timeout=30)


def test_a_hold_longer_than_the_wait_is_named_as_such(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "LOCK_WAIT_S", 0.3)
    holder = _holder(db_path, 20.0)
    try:
        with pytest.raises(StoreError, match=r"another process has held it for 0 s"):
            BenchStore(db_path)
    finally:
        holder.kill()
        holder.wait(timeout=30)
