"""Shipping runs between stores as Parquet or JSON files.

Parquet files hold one row per result (run columns repeated, raw samples as two lists:
``samples`` and ``left_out_samples``, which older exports lack) and are written by DuckDB's
``COPY ... TO``; JSON files hold a :class:`RunArchive` record, whose results carry both lists
too. Both are written to a temporary file in the target directory and renamed into place.
Importing a run whose uid is already in the store skips it, so shipping the same file twice
is harmless.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
from pydantic import Field

from torchsmith.interfaces import BenchmarkResult, Environment, Record, Statistics, atomic_target

from ._errors import StoreError
from ._registry import case_key
from ._store import SAMPLE_LISTS, BenchStore

FORMATS = ("parquet", "json")


class ExportedRun(Record):
    uid: str
    created_at: datetime
    label: str | None = None
    environment: Environment
    results: list[BenchmarkResult] = Field(default_factory=list)


ARCHIVE_FORMAT = "torchsmith-bench-runs"


class RunArchive(Record):
    """The JSON export format: runs with their raw samples."""

    format: str = ARCHIVE_FORMAT
    runs: list[ExportedRun] = Field(default_factory=list)


def _format_of(path: Path, fmt: str | None) -> str:
    chosen = fmt or path.suffix.lstrip(".").lower()
    if chosen not in FORMATS:
        raise StoreError(f"{path}: unknown export format {chosen!r}; use .parquet or .json")
    return chosen


def archive(store: BenchStore, run_ids: Sequence[int]) -> RunArchive:
    runs = []
    for run_id in dict.fromkeys(run_ids):  # `1 latest~1` may name one run twice
        info = store.run(run_id)
        runs.append(
            ExportedRun(
                uid=info.uid,
                created_at=info.created_at,
                label=info.label,
                environment=info.environment,
                results=store.results(run_id),
            )
        )
    return RunArchive(runs=runs)


_PARQUET_QUERY = f"""
SELECT r.uid AS run_uid, r.created_at, r.label, r.environment::VARCHAR AS environment,
       c.name AS "case", c.params::VARCHAR AS params, s.unit, s.inner_loops, s.n, s.median,
       s.mean, s.stdev, s.iqr, s.min, s.max, s.ci_low, s.ci_high, s.peak_memory_bytes,
       s.baseline, s.extra::VARCHAR AS extra, {SAMPLE_LISTS}
FROM runs r JOIN summaries s USING (run_id) JOIN cases c USING (case_id)
WHERE r.run_id IN (SELECT unnest($ids::BIGINT[]))
ORDER BY r.created_at, r.run_id, c.key
"""


def export_runs(
    store: BenchStore, run_ids: Sequence[int], path: str | Path, *, fmt: str | None = None
) -> Path:
    """Write runs (with raw samples) to ``path``; the format follows the suffix."""
    target = Path(path)
    chosen = _format_of(target, fmt)
    ids = [store.run(run_id).run_id for run_id in run_ids]  # unknown ids fail here
    with atomic_target(target) as tmp:
        if chosen == "json":
            tmp.write_text(archive(store, ids).write())
        else:
            with store.transaction() as con:
                query = f"COPY ({_PARQUET_QUERY}) TO '{_quote(tmp)}' (FORMAT parquet)"
                con.execute(query, {"ids": ids})
    return target


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")


def read_archive(path: str | Path, *, fmt: str | None = None) -> RunArchive:
    """The runs in an exported file, validated."""
    source = Path(path)
    if not source.is_file():
        raise StoreError(f"run export {source} does not exist")
    if _format_of(source, fmt) == "json":
        return _read_json(source)
    return _read_parquet(source)


def _read_json(source: Path) -> RunArchive:
    try:
        data = json.loads(source.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreError(f"{source} is not a torchsmith-bench JSON export: {exc}") from exc
    found = data.get("format") if isinstance(data, dict) else None
    if found != ARCHIVE_FORMAT:
        raise StoreError(
            f"{source} is not a torchsmith-bench JSON export: its 'format' is {found!r}, not "
            f"{ARCHIVE_FORMAT!r}; write one with `torchsmith bench export RUN --out FILE.json`"
        )
    try:
        return RunArchive.read(data)
    except ValueError as exc:
        raise StoreError(f"{source} is not a valid torchsmith-bench JSON export: {exc}") from exc


def _read_parquet(source: Path) -> RunArchive:
    con = duckdb.connect()
    try:
        cursor = con.execute("SELECT * FROM read_parquet(?)", [str(source)])
        names = [d[0] for d in cursor.description or []]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    except duckdb.Error as exc:
        raise StoreError(f"{source} is not a readable Parquet run export: {exc}") from exc
    finally:
        con.close()
    runs: dict[str, ExportedRun] = {}
    try:
        for row in rows:
            environment = Environment.read(row["environment"])
            run = runs.setdefault(
                row["run_uid"],
                ExportedRun(uid=row["run_uid"], created_at=row["created_at"],
                            label=row["label"], environment=environment),
            )  # fmt: skip
            run.results.append(_parquet_result(row, environment))
    except (KeyError, ValueError) as exc:
        raise StoreError(f"{source} is not a torchsmith-bench Parquet export: {exc}") from exc
    return RunArchive(runs=list(runs.values()))


def _parquet_result(row: dict[str, Any], environment: Environment) -> BenchmarkResult:
    stats = Statistics(**{k: row[k] for k in (
        "n", "median", "mean", "stdev", "iqr", "min", "max", "ci_low", "ci_high")})  # fmt: skip
    return BenchmarkResult(
        case=row["case"],
        params=json.loads(row["params"]),
        samples=list(row["samples"] or []),
        left_out_samples=list(row.get("left_out_samples") or []),
        unit=row["unit"],
        inner_loops=row["inner_loops"],
        statistics=stats,
        environment=environment,
        peak_memory_bytes=row["peak_memory_bytes"],
        baseline=row["baseline"],
        extra=json.loads(row["extra"] or "{}"),
    )


def import_runs(store: BenchStore, path: str | Path, *, fmt: str | None = None) -> list[int]:
    """Add the runs of an exported file to ``store``; returns the new run ids.

    Each run is written in its own transaction; runs already present (same uid) are skipped.
    """
    return add_runs(store, read_archive(path, fmt=fmt))


def add_runs(store: BenchStore, runs: RunArchive) -> list[int]:
    """Save the runs of an archive whose uid ``store`` lacks; returns the new run ids.
    A result without samples, or with a NaN or infinite one, is refused before any run is
    written: compare and report could not use the run it belongs to."""
    for run in runs.runs:
        for result in run.results:
            if not result.samples or not all(math.isfinite(x) for x in result.samples):
                what = "no samples" if not result.samples else "a NaN or infinite sample"
                raise StoreError(
                    f"run {run.uid}: {case_key(result.case, dict(result.params))} has {what}; "
                    "nothing was imported"
                )
    added = []
    known = {info.uid for info in store.runs()}
    for run in runs.runs:
        if run.uid in known:
            continue
        added.append(
            store.save_run(
                run.results,
                environment=run.environment,
                label=run.label,
                uid=run.uid,
                created_at=run.created_at,
            )
        )
        known.add(run.uid)  # a file holding a run twice adds it once
    return added
