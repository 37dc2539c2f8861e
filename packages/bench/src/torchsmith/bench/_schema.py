"""The DuckDB schema of a bench store and its forward migrations.

``MIGRATIONS[v]`` turns a version ``v - 1`` database into version ``v``. Migrations only
ever move forward and each runs in the same transaction as the row recording it, so a
database is at one version or the next, never in between. A store refuses a database
whose version is newer than ``SCHEMA_VERSION`` before writing anything to it.

``samples.kept`` (version 3) is FALSE for a sample measured but left out of its result's
statistics (a disturbed round). It is nullable because DuckDB 1.1 (the oldest this package
allows) refuses ``ADD COLUMN ... NOT NULL``; NULL reads as kept, so test ``kept IS NOT FALSE``.
"""

from __future__ import annotations

SCHEMA_VERSION = 3

MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE schema_version (
            version INTEGER NOT NULL,
            applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )""",
        "CREATE SEQUENCE run_id_seq START 1",
        """CREATE TABLE runs (
            run_id BIGINT PRIMARY KEY DEFAULT nextval('run_id_seq'),
            uid VARCHAR NOT NULL UNIQUE,
            created_at TIMESTAMP NOT NULL,
            label VARCHAR,
            fingerprint VARCHAR NOT NULL,
            git_commit VARCHAR,
            git_branch VARCHAR,
            environment JSON NOT NULL
        )""",
        "CREATE SEQUENCE case_id_seq START 1",
        """CREATE TABLE cases (
            case_id BIGINT PRIMARY KEY DEFAULT nextval('case_id_seq'),
            key VARCHAR NOT NULL UNIQUE,
            name VARCHAR NOT NULL,
            params JSON NOT NULL
        )""",
        "CREATE SEQUENCE result_id_seq START 1",
        """CREATE TABLE summaries (
            result_id BIGINT PRIMARY KEY DEFAULT nextval('result_id_seq'),
            run_id BIGINT NOT NULL,
            case_id BIGINT NOT NULL,
            unit VARCHAR NOT NULL,
            inner_loops INTEGER NOT NULL,
            n INTEGER NOT NULL,
            median DOUBLE NOT NULL,
            mean DOUBLE NOT NULL,
            stdev DOUBLE NOT NULL,
            iqr DOUBLE NOT NULL,
            min DOUBLE NOT NULL,
            max DOUBLE NOT NULL,
            ci_low DOUBLE,
            ci_high DOUBLE,
            peak_memory_bytes BIGINT,
            baseline VARCHAR,
            UNIQUE (run_id, case_id)
        )""",
        """CREATE TABLE samples (
            result_id BIGINT NOT NULL,
            idx INTEGER NOT NULL,
            value DOUBLE NOT NULL,
            PRIMARY KEY (result_id, idx)
        )""",
    ),
    # 2: derived numbers (throughput, ratio to the baseline) and a history lookup index.
    2: (
        "ALTER TABLE summaries ADD COLUMN extra JSON DEFAULT '{}'",
        "CREATE INDEX runs_by_fingerprint ON runs (fingerprint, created_at)",
    ),
    # 3: samples left out of the statistics are stored too, flagged; existing rows are kept.
    3: ("ALTER TABLE samples ADD COLUMN kept BOOLEAN DEFAULT TRUE",),
}

TABLES = ("schema_version", "runs", "cases", "summaries", "samples")
