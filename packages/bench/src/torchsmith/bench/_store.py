"""A DuckDB file holding every run, case, raw sample and summary.

Opening checks the file before touching it: a corrupt file, another program's database or
one written by a newer torchsmith-bench raise an error and the file is left as it was.
A run is written in one transaction, so a crash (or an error) part-way leaves no trace of it.
Every sample is stored: those in a result's statistics and, flagged ``kept = FALSE``, those
left out of them (a disturbed round); reading gives them back as ``samples`` and
``left_out_samples``, and everything that decides uses ``samples`` only.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from torchsmith.interfaces import (
    BenchmarkResult,
    Environment,
    SchemaVersionError,
    Statistics,
)

from ._errors import RunNotFoundError, StoreError
from ._registry import case_key
from ._schema import MIGRATIONS, SCHEMA_VERSION, TABLES


@dataclass(frozen=True)
class RunInfo:
    run_id: int
    uid: str
    created_at: datetime
    label: str | None
    environment: Environment
    n_results: int

    @property
    def fingerprint(self) -> str:
        return self.environment.fingerprint


@dataclass(frozen=True)
class HistoryPoint:
    run_id: int
    created_at: datetime
    git_commit: str | None
    median: float
    ci_low: float | None
    ci_high: float | None


_SUMMARY_COLUMNS = (
    "unit, inner_loops, n, median, mean, stdev, iqr, min, max, ci_low, ci_high, "
    "peak_memory_bytes, baseline, extra"
)

# A result's samples in measured order, as two lists: those in its statistics, then those
# left out of them. ``kept`` is nullable (see _schema); NULL counts as kept.
SAMPLE_LISTS = (
    "(SELECT list(x.value ORDER BY x.idx) FROM samples x"
    " WHERE x.result_id = s.result_id AND x.kept IS NOT FALSE) AS samples,"
    " (SELECT list(x.value ORDER BY x.idx) FROM samples x"
    " WHERE x.result_id = s.result_id AND x.kept = FALSE) AS left_out_samples"
)


# The forms ``resolve_run`` accepts, for its error messages.
RUN_REFERENCES = "a run id, 'latest', 'latest~N' (N runs before it), a run uid or git commit prefix"
_LATEST = re.compile(r"latest(?:~(\d+))?", re.ASCII)


@contextmanager
def duckdb_errors(path: Path, doing: str) -> Iterator[None]:
    """Re-raise DuckDB's errors as a one-line ``StoreError`` naming the file."""
    try:
        yield
    except duckdb.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise StoreError(
            f"bench database {path}: {doing} failed ({type(exc).__name__}: {first}); it may "
            "be corrupt or damaged. Nothing was written to it"
        ) from exc


class BenchStore:
    """``BenchStore(path)``: open (creating or migrating) a bench database file."""

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        if self.path.is_dir():
            raise StoreError(f"bench database {self.path} is a directory, not a file")
        if read_only and not self.path.exists():
            raise StoreError(f"bench database {self.path} does not exist")
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = _connect(self.path, read_only)
        try:
            version = _read_version(self._con, self.path)
            if version < SCHEMA_VERSION:
                if read_only:
                    raise StoreError(
                        f"bench database {self.path} has schema {version}, older than "
                        f"{SCHEMA_VERSION}; open it writable once to migrate it"
                    )
                self._migrate(version)
        except BaseException:
            with suppress(duckdb.Error):
                self._con.close()
            raise

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def __enter__(self) -> BenchStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self, doing: str = "writing") -> Iterator[duckdb.DuckDBPyConnection]:
        """All statements inside commit together or, on any exception, not at all.

        DuckDB's errors come out as ``StoreError`` saying what was being done (``doing``).
        """
        with self._lock, duckdb_errors(self.path, doing):
            self._con.execute("BEGIN TRANSACTION")
            try:
                yield self._con
            except BaseException:
                with suppress(duckdb.Error):  # a broken file may refuse even this
                    self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")

    def _migrate(self, current: int) -> None:
        for version in range(current + 1, SCHEMA_VERSION + 1):
            with self.transaction(f"migrating schema {version - 1} to {version}") as con:
                for statement in MIGRATIONS[version]:
                    con.execute(statement)
                con.execute("INSERT INTO schema_version (version) VALUES (?)", [version])

    def schema_version(self) -> int:
        with self._lock:
            return _read_version(self._con, self.path)

    def _query(self, sql: str, args: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock, duckdb_errors(self.path, "reading"):
            return self._con.execute(sql, args).fetchall()

    # ------------------------------------------------------------ writing

    def save_run(
        self,
        results: Sequence[BenchmarkResult],
        *,
        environment: Environment | None = None,
        label: str | None = None,
        uid: str | None = None,
        created_at: datetime | None = None,
    ) -> int:
        """Store one run and all its results in a single transaction; returns its id."""
        if environment is None:
            if not results:
                raise StoreError("save_run: a run with no results needs an environment")
            environment = results[0].environment
        uid = uid or uuid.uuid4().hex
        created = created_at or datetime.now(UTC).replace(tzinfo=None)
        with self.transaction() as con:
            if con.execute("SELECT 1 FROM runs WHERE uid = ?", [uid]).fetchone():
                raise StoreError(f"run {uid} is already in {self.path}")
            row = con.execute(
                "INSERT INTO runs (uid, created_at, label, fingerprint, git_commit, git_branch,"
                " environment) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING run_id",
                [
                    uid,
                    created,
                    label,
                    environment.fingerprint,
                    environment.git_commit,
                    environment.git_branch,
                    environment.model_dump_json(),
                ],
            ).fetchone()
            assert row is not None
            run_id = int(row[0])
            for result in results:
                self._insert_result(con, run_id, result)
        return run_id

    def _insert_result(
        self, con: duckdb.DuckDBPyConnection, run_id: int, result: BenchmarkResult
    ) -> None:
        case_id = _case_id(con, result.case, dict(result.params))
        s = result.statistics
        row = con.execute(
            f"INSERT INTO summaries (run_id, case_id, {_SUMMARY_COLUMNS}) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING result_id",
            [
                run_id,
                case_id,
                result.unit,
                result.inner_loops,
                s.n,
                s.median,
                s.mean,
                s.stdev,
                s.iqr,
                s.min,
                s.max,
                s.ci_low,
                s.ci_high,
                result.peak_memory_bytes,
                result.baseline,
                json.dumps(result.extra),
            ],
        ).fetchone()
        assert row is not None
        _insert_samples(con, int(row[0]), result.samples, result.left_out_samples)

    # ------------------------------------------------------------ reading

    def runs(self, *, fingerprint: str | None = None, limit: int | None = None) -> list[RunInfo]:
        """Runs, newest first."""
        sql = (
            "SELECT r.run_id, r.uid, r.created_at, r.label, r.environment, count(s.result_id)"
            " FROM runs r LEFT JOIN summaries s USING (run_id)"
        )
        args: list[Any] = []
        if fingerprint is not None:
            sql += " WHERE r.fingerprint = ?"
            args.append(fingerprint)
        sql += " GROUP BY ALL ORDER BY r.created_at DESC, r.run_id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_run_info(row) for row in self._query(sql, args)]

    def run(self, run_id: int) -> RunInfo:
        rows = self._query(
            "SELECT r.run_id, r.uid, r.created_at, r.label, r.environment, count(s.result_id)"
            " FROM runs r LEFT JOIN summaries s USING (run_id) WHERE r.run_id = ? GROUP BY ALL",
            [run_id],
        )
        if not rows:
            raise RunNotFoundError(f"no run {run_id} in {self.path}", str(run_id))
        return _run_info(rows[0])

    def resolve_run(self, ref: str | int) -> int:
        """A run id from an id, ``latest``/``latest~N``, a uid prefix or a git commit prefix."""
        text = str(ref).strip()
        if not text:
            raise StoreError(f"empty run reference; give {RUN_REFERENCES}")
        if re.fullmatch(r"\d+", text, re.ASCII):
            found = self._query("SELECT run_id FROM runs WHERE run_id = ?", [int(text)])
            if found or len(text) < 4:  # else a commit prefix of digits only (1 in 25 are)
                return self.run(int(text)).run_id
        if text.startswith("latest"):
            return self._latest(text)
        rows = self._query(
            "SELECT run_id, uid, git_commit FROM runs"
            " WHERE starts_with(uid, ?) OR starts_with(git_commit, ?)"
            " ORDER BY created_at DESC, run_id DESC",
            [text, text],
        )
        if not rows:
            message = f"no run matches {text!r} in {self.path}; give {RUN_REFERENCES}"
            raise RunNotFoundError(message, text)
        # What each reading names: a uid its run, a commit its newest run (rows come newest
        # first). Readings that name different runs are refused, as git refuses a short sha.
        readings: dict[str, int] = {}
        for run_id, uid, commit in rows:
            if uid.startswith(text):
                readings[f"uid {uid}"] = run_id
            if commit and commit.startswith(text):
                readings.setdefault(f"commit {commit}", run_id)
        if len(set(readings.values())) > 1:
            listed = ", ".join(f"{name} (run {run_id})" for name, run_id in readings.items())
            # No path in the message: a server shows it to its clients.
            raise StoreError(
                f"run reference {text!r} is ambiguous: it names {listed}; give more "
                "characters or a run id"
            )
        return next(iter(readings.values()))

    def _latest(self, text: str) -> int:
        match = _LATEST.fullmatch(text)
        if match is None:
            raise StoreError(f"bad run reference {text!r}; give {RUN_REFERENCES}")
        back = int(match.group(1) or 0)
        runs = self.runs(limit=back + 1)
        if len(runs) <= back:
            raise RunNotFoundError(f"{text}: {self.path} holds only {len(runs)} runs", text)
        return runs[back].run_id

    def results(self, run_id: int) -> list[BenchmarkResult]:
        """Every result of one run, raw samples included (left-out ones apart), by case key."""
        info = self.run(run_id)
        rows = self._query(
            f"SELECT c.name, c.params, {SAMPLE_LISTS}, {_SUMMARY_COLUMNS}"
            " FROM summaries s JOIN cases c USING (case_id) WHERE s.run_id = ? ORDER BY c.key",
            [run_id],
        )
        return [_result(row, info.environment) for row in rows]

    def cases(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(key, name, params) of every case ever stored."""
        rows = self._query("SELECT key, name, params FROM cases ORDER BY key")
        return [(k, n, json.loads(p)) for k, n, p in rows]

    def history(
        self, key: str, *, fingerprint: str | None = None, any_environment: bool = False
    ) -> list[HistoryPoint]:
        """One case's median over the runs of environment ``fingerprint``, oldest first.

        Timings from several machines make no series, so leaving ``fingerprint`` out is an
        error unless ``any_environment=True`` asks for every environment's runs.
        """
        if fingerprint is None and not any_environment:
            raise StoreError(
                f"history of {key!r}: give fingerprint= (one environment's runs), or "
                "any_environment=True to mix the runs of every environment"
            )
        sql = (
            "SELECT r.run_id, r.created_at, r.git_commit, s.median, s.ci_low, s.ci_high"
            " FROM summaries s JOIN runs r USING (run_id) JOIN cases c USING (case_id)"
            " WHERE c.key = ?"
        )
        args: list[Any] = [key]
        if fingerprint is not None:
            sql += " AND r.fingerprint = ?"
            args.append(fingerprint)
        rows = self._query(sql + " ORDER BY r.created_at, r.run_id", args)
        return [HistoryPoint(*row) for row in rows]


LOCK_WAIT_S = 10.0  # how long opening waits for another process's hold on the file


def _connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    """A connection; while another process holds the file (DuckDB allows one writer, or
    readers), retried for up to ``LOCK_WAIT_S``: runs hold it only to write, briefly."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise _unopenable(path, exc) from exc
            if time.monotonic() > deadline:
                raise StoreError(
                    f"cannot open bench database {path}: another process has held it for "
                    f"{LOCK_WAIT_S:.0f} s ({exc}); it was not changed"
                ) from exc
            time.sleep(0.1)
        except duckdb.Error as exc:
            raise _unopenable(path, exc) from exc


def _unopenable(path: Path, exc: Exception) -> StoreError:
    return StoreError(
        f"cannot open bench database {path}: {exc}. It may be corrupt, not a DuckDB "
        "file, or written by a newer DuckDB; it was not changed"
    )


def _read_version(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """The schema version, 0 for an empty database; refuses foreign and newer databases."""
    with duckdb_errors(path, "reading the schema version"):
        return _checked_version(con, path)


def _checked_version(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    tables = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if not tables:
        return 0
    if "schema_version" not in tables:
        raise StoreError(
            f"{path} is a DuckDB database but not a torchsmith-bench one (tables: "
            f"{', '.join(sorted(tables))}); give another --db file"
        )
    row = con.execute("SELECT max(version) FROM schema_version").fetchone()
    version = int(row[0]) if row and row[0] is not None else 0
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"bench database {path} has schema version {version}, newer than the {SCHEMA_VERSION}"
            " this torchsmith-bench understands; upgrade torchsmith-bench. The file was not changed"
        )
    missing = [t for t in TABLES if t not in tables]
    if missing and version >= 1:
        raise StoreError(f"bench database {path} lacks tables {missing}; it is damaged")
    return version


def _case_id(con: duckdb.DuckDBPyConnection, name: str, params: dict[str, Any]) -> int:
    key = case_key(name, params)
    row = con.execute("SELECT case_id FROM cases WHERE key = ?", [key]).fetchone()
    if row is None:
        row = con.execute(
            "INSERT INTO cases (key, name, params) VALUES (?, ?, ?) RETURNING case_id",
            [key, name, json.dumps(params, sort_keys=True)],
        ).fetchone()
    assert row is not None
    return int(row[0])


def _insert_samples(
    con: duckdb.DuckDBPyConnection, result_id: int, kept: list[float], left_out: list[float]
) -> None:
    # One statement per result: unnest the values beside their subscripts and flags, the
    # kept ones first so their subscripts are what they were before left-out ones existed.
    con.execute(
        "INSERT INTO samples (result_id, idx, value, kept) SELECT $rid,"
        " generate_subscripts($v::DOUBLE[], 1) - 1, unnest($v::DOUBLE[]), unnest($k::BOOLEAN[])",
        {
            "rid": result_id,
            "v": [*kept, *left_out],
            "k": [True] * len(kept) + [False] * len(left_out),
        },
    )


def _run_info(row: tuple[Any, ...]) -> RunInfo:
    run_id, uid, created_at, label, environment, count = row
    return RunInfo(
        run_id=int(run_id),
        uid=str(uid),
        created_at=created_at,
        label=label,
        environment=Environment.read(environment),
        n_results=int(count),
    )


def _result(row: tuple[Any, ...], environment: Environment) -> BenchmarkResult:
    name, params, samples, left_out, unit, inner, n, median, mean, stdev, iqr, lo, hi, *rest = row
    ci_low, ci_high, peak, baseline, extra = rest
    stats = Statistics(
        n=n, median=median, mean=mean, stdev=stdev, iqr=iqr, min=lo, max=hi,
        ci_low=ci_low, ci_high=ci_high,
    )  # fmt: skip
    return BenchmarkResult(
        case=name,
        params=json.loads(params),
        samples=list(samples or []),
        left_out_samples=list(left_out or []),
        unit=unit,
        inner_loops=inner,
        statistics=stats,
        environment=environment,
        peak_memory_bytes=peak,
        baseline=baseline,
        extra=json.loads(extra) if extra else {},
    )
