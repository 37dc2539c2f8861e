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


def test_ids_come_from_sequences_and_cases_are_shared(db_path: Path, make_result) -> None:
    with BenchStore(db_path) as store:
        first = store.save_run([make_result("a")])
        second = store.save_run([make_result("a", seed=2)])
        assert second == first + 1
        assert [key for key, _, _ in store.cases()] == ["a"]
        assert [p.run_id for p in store.history("a")] == [first, second]


def test_a_failure_mid_write_leaves_no_half_run(
    db_path: Path, make_result, monkeypatch: pytest.MonkeyPatch
) -> None:
    with BenchStore(db_path) as store:
        store.save_run([make_result("kept")])
    before = _counts(db_path)
    calls = {"n": 0}
    real = store_module._insert_samples

    def failing(con, result_id, values):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk on fire")
        return real(con, result_id, values)

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
        with pytest.raises(StoreError, match="already in"):
            store.save_run([make_result()], uid="aaaa1111")


def test_missing_database_opened_read_only_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        BenchStore(tmp_path / "none.duckdb", read_only=True)
