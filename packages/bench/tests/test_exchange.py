"""Export and import of runs as Parquet and JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from torchsmith.bench import BenchStore, StoreError, export_runs, import_runs, read_archive
from torchsmith.bench._cli import main
from torchsmith.interfaces import SchemaVersionError


@pytest.mark.parametrize("suffix", ["parquet", "json"])
def test_runs_travel_to_another_store_unchanged(tmp_path: Path, make_result, suffix: str) -> None:
    results = [make_result("a", params={"n": 1}), make_result("b", seed=3)]
    with BenchStore(tmp_path / "ci.duckdb") as ci:
        ids = [ci.save_run(results, label="pr"), ci.save_run([make_result("a", seed=9)])]
        out = export_runs(ci, ids, tmp_path / f"runs.{suffix}")
        originals = [(ci.run(i), ci.results(i)) for i in ids]
    with BenchStore(tmp_path / "central.duckdb") as central:
        added = import_runs(central, out)
        assert len(added) == 2
        for (info, stored), new_id in zip(originals, added, strict=True):
            copy = central.run(new_id)
            assert (copy.uid, copy.label, copy.environment) == (info.uid, info.label,
                                                                 info.environment)  # fmt: skip
            assert copy.created_at == info.created_at
            assert [r.model_dump() for r in central.results(new_id)] == [
                r.model_dump() for r in stored
            ]
        assert import_runs(central, out) == []  # shipping twice adds nothing


def test_parquet_export_is_plain_parquet_with_samples(tmp_path: Path, make_result) -> None:
    with BenchStore(tmp_path / "s.duckdb") as store:
        run_id = store.save_run([make_result("a", n=7)])
        out = export_runs(store, [run_id], tmp_path / "out" / "r.parquet")
    rows = duckdb.sql(f"SELECT \"case\", len(samples) FROM read_parquet('{out}')").fetchall()
    assert rows == [("a", 7)]
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_unknown_format_and_bad_files_are_clear_errors(tmp_path: Path, make_result) -> None:
    with BenchStore(tmp_path / "s.duckdb") as store:
        run_id = store.save_run([make_result()])
        with pytest.raises(StoreError, match="unknown export format 'csv'"):
            export_runs(store, [run_id], tmp_path / "r.csv")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(StoreError, match="not a readable Parquet"):
        read_archive(tmp_path / "bad.parquet")
    (tmp_path / "bad.json").write_text('{"runs": [{"uid": 1}]}')
    with pytest.raises(StoreError, match="not a torchsmith-bench JSON export"):
        read_archive(tmp_path / "bad.json")
    with pytest.raises(StoreError, match="does not exist"):
        read_archive(tmp_path / "none.json")


@pytest.mark.parametrize("text", ["{}", "[]", '{"format": "other", "runs": []}', '"x"'])
def test_json_without_the_export_format_name_is_refused(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "other.json").write_text(text)
    with pytest.raises(StoreError, match=r"its 'format' is .*not 'torchsmith-bench-runs'"):
        read_archive(tmp_path / "other.json")
    db = tmp_path / "s.duckdb"
    assert main(["import", str(tmp_path / "other.json"), "--db", str(db)]) == 2
    assert "torchsmith bench export" in capsys.readouterr().err
    assert not db.exists()  # nothing opened or created for a bad file


def test_a_newer_major_json_export_is_refused(tmp_path: Path) -> None:
    text = '{"format": "torchsmith-bench-runs", "schema_version": "2.0", "runs": []}'
    (tmp_path / "new.json").write_text(text)
    with pytest.raises(SchemaVersionError, match="newer major"):
        read_archive(tmp_path / "new.json")


@pytest.mark.parametrize("suffix", ["parquet", "json"])
def test_left_out_samples_survive_export_and_import(
    tmp_path: Path, make_result, suffix: str
) -> None:
    disturbed = make_result("a", n=9)
    disturbed.left_out_samples = [2e-3, 3e-3]
    with BenchStore(tmp_path / "ci.duckdb") as ci:
        run_id = ci.save_run([disturbed, make_result("b", n=5, seed=1)])
        out = export_runs(ci, [run_id], tmp_path / f"runs.{suffix}")
    (exported,) = read_archive(out).runs
    assert [r.left_out_samples for r in exported.results] == [[2e-3, 3e-3], []]
    with BenchStore(tmp_path / "central.duckdb") as central:
        (new_id,) = import_runs(central, out)
        a, b = central.results(new_id)
    assert a.samples == disturbed.samples and a.left_out_samples == [2e-3, 3e-3]
    assert a.statistics == disturbed.statistics and b.left_out_samples == []
    con = duckdb.connect(str(tmp_path / "central.duckdb"), read_only=True)
    counts = con.execute("SELECT kept, count(*) FROM samples GROUP BY kept ORDER BY kept")
    assert counts.fetchall() == [(False, 2), (True, 9 + 5)]
    con.close()


def test_a_parquet_export_without_left_out_samples_imports(tmp_path: Path, make_result) -> None:
    """Exports written before left-out samples were stored have no such column."""
    with BenchStore(tmp_path / "ci.duckdb") as ci:
        run_id = ci.save_run([make_result("a", n=6)])
        full = export_runs(ci, [run_id], tmp_path / "full.parquet")
    old = tmp_path / "old.parquet"
    duckdb.sql(
        f"COPY (SELECT * EXCLUDE (left_out_samples) FROM read_parquet('{full}')) TO '{old}'"
        " (FORMAT parquet)"
    )
    with BenchStore(tmp_path / "central.duckdb") as central:
        (new_id,) = import_runs(central, old)
        (result,) = central.results(new_id)
    assert len(result.samples) == 6 and result.left_out_samples == []


@pytest.mark.parametrize("suffix", ["parquet", "json"])
def test_a_run_named_twice_is_exported_and_imported_once(
    tmp_path: Path, make_result, suffix: str
) -> None:
    with BenchStore(tmp_path / "ci.duckdb") as ci:
        first = ci.save_run([make_result("a")])
        ci.save_run([make_result("a", seed=2)])
        out = export_runs(ci, [first, ci.resolve_run("latest~1")], tmp_path / f"runs.{suffix}")
    assert len(read_archive(out).runs) == 1
    with BenchStore(tmp_path / "central.duckdb") as central:
        assert len(import_runs(central, out)) == 1


@pytest.mark.parametrize("samples", [[], [1e-3, float("nan")], [float("inf")]])
def test_a_result_without_usable_samples_is_refused_before_anything_is_imported(
    tmp_path: Path, make_result, samples: list[float]
) -> None:
    from torchsmith.bench._exchange import ExportedRun, RunArchive, add_runs
    from torchsmith.interfaces import Environment

    good = make_result("a")
    bad = make_result("b").model_copy(update={"samples": samples})
    env = Environment(fingerprint="f")
    archive = RunArchive(runs=[
        ExportedRun(uid="u1", created_at=datetime.now(UTC), label=None, environment=env,
                    results=[good]),
        ExportedRun(uid="u2", created_at=datetime.now(UTC), label=None, environment=env,
                    results=[bad]),
    ])  # fmt: skip
    with BenchStore(tmp_path / "central.duckdb") as central:
        with pytest.raises(StoreError, match=r"run u2: b has .*; nothing was imported"):
            add_runs(central, archive)
        assert central.runs() == []  # not even the good run before it
