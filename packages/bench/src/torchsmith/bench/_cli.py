"""``torchsmith bench``: run, compare, report, list, export, import.

Exit codes: 0 success, 1 a regression with ``--fail-on-regression`` (or a noisy or missing
case with ``--fail-on-noisy``), 2 an error.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from torchsmith.interfaces import ConfigError, TorchsmithError

from ._compare import Comparison, compare, compare_history
from ._exchange import add_runs, export_runs, read_archive
from ._html import html_report, write_text
from ._markdown import comparison_table, markdown_summary, results_table
from ._memory import MEMORY_MODES
from ._registry import REGISTRY, discover, load_entry_points
from ._runner import run
from ._stats import DEFAULT_ALPHA, DEFAULT_THRESHOLD
from ._store import RUN_REFERENCES, BenchStore
from ._timer import MeasureConfig

DB_VARIABLE = "TORCHSMITH_BENCH_DB"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchsmith bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--db", type=Path, default=Path(os.environ.get(DB_VARIABLE, "bench.duckdb")),
                    help=f"DuckDB file (default ${DB_VARIABLE} or bench.duckdb)")  # fmt: skip
    decide = argparse.ArgumentParser(add_help=False)
    decide.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help="smallest relative change called (default 0.05)")  # fmt: skip
    decide.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                        help="Mann-Whitney significance level (default 0.01)")  # fmt: skip
    decide.add_argument("--any-environment", action="store_true",
                        help="compare runs from different environment fingerprints")  # fmt: skip
    decide.add_argument("--fail-on-regression", action="store_true",
                        help="exit 1 when any case regressed")  # fmt: skip
    decide.add_argument("--fail-on-noisy", action="store_true",
                        help="also exit 1 when a case is noisy or missing: nothing was ruled "
                             "out there, so a regression may hide in it")  # fmt: skip

    p = sub.add_parser("run", parents=[db], help="time benchmark cases and store a run")
    p.add_argument(
        "paths",
        nargs="*",
        type=Path,
        help="benchmark files or directories of bench_*.py (default ./benchmarks)",
    )
    p.add_argument("--filter", action="append", default=[], help="case name glob or substring")
    p.add_argument("--label", help="a note stored with the run")
    p.add_argument("--max-time", type=float, default=1.0, help="seconds of samples per case")
    p.add_argument("--min-samples", type=int, default=10)
    p.add_argument("--max-samples", type=int, default=100)
    p.add_argument(
        "--memory",
        choices=MEMORY_MODES,
        default="auto",
        help="peak memory: auto = CUDA max allocated for CUDA work, else peak RSS in a child "
        "process (a few seconds per case); cuda = CUDA only; child = peak RSS always; off",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="worker processes per run, samples pooled; from 3 on, a round far from the "
        "others is left out (default 3; 1: in-process)",
    )
    p.add_argument(
        "--no-entry-points", action="store_true", help="skip cases installed suites register"
    )
    p.add_argument("--list", action="store_true", help="list the cases found and stop")
    p.add_argument("--quiet", action="store_true", help="no progress display")

    p = sub.add_parser("compare", parents=[db, decide], help="compare two stored runs")
    p.add_argument(
        "base",
        help="run id, latest~N, uid, git commit, or history[:N] (the last "
        "N runs of the head's environment pooled, default 5)",
    )
    p.add_argument("head", help="run id, latest, uid or git commit")
    p.add_argument("--markdown", type=Path, help="also write the markdown summary here")

    p = sub.add_parser("report", parents=[db, decide], help="write HTML and markdown reports")
    p.add_argument("--run", default="latest", help="the run to report (default latest)")
    p.add_argument("--base", default="auto",
                   help="run to compare with: an id, 'auto' (previous run of the same "
                        "environment), 'history[:N]' or 'none'")  # fmt: skip
    p.add_argument("--html", type=Path, help="self-contained HTML report file")
    p.add_argument("--markdown", type=Path, help="markdown summary file")

    p = sub.add_parser("list", parents=[db], help="list stored runs (or cases)")
    p.add_argument("--cases", action="store_true")

    p = sub.add_parser("export", parents=[db], help="write runs to a .parquet or .json file")
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", type=Path, required=True)

    p = sub.add_parser("import", parents=[db], help="add runs from exported files")
    p.add_argument("files", nargs="+", type=Path)
    return parser


def _load_cases(args: argparse.Namespace) -> None:
    paths = list(args.paths)
    if not paths and Path("benchmarks").is_dir():
        paths = [Path("benchmarks")]
    discover(paths)
    if not args.no_entry_points:
        load_entry_points()


def _cmd_run(args: argparse.Namespace) -> int:
    _load_cases(args)
    cases = REGISTRY.select(args.filter)  # a --filter matching nothing is an error
    if not cases:
        raise ConfigError(
            "no benchmark cases registered: give bench_*.py files or directories, or run "
            "where ./benchmarks holds them"
        )
    if args.list:
        print("\n".join(case.name for case in cases))
        return 0
    config = MeasureConfig(max_time=args.max_time, min_samples=args.min_samples,
                           max_samples=args.max_samples)  # fmt: skip
    with BenchStore(args.db):  # a damaged or newer database fails now, not after the timing
        pass
    # The file is opened again only to write the run: readers and other runs are not held
    # off while the cases are timed.
    run_id = run(cases, store=args.db, label=args.label, config=config, memory=args.memory,
                 rounds=args.rounds, progress=not args.quiet)  # fmt: skip
    with BenchStore(args.db, read_only=True) as store:
        print(results_table(store.results(run_id)))
    print(f"\nstored run {run_id} in {args.db}")
    return 0


def _exit_for(comparison: Comparison, args: argparse.Namespace) -> int:
    if comparison.has_regression and args.fail_on_regression:
        keys = ", ".join(row.key for row in comparison.regressions)
        print(f"regressed: {keys}", file=sys.stderr)
        return 1
    undecided = [row.key for row in comparison.rows if row.verdict in ("noisy", "missing")]
    if undecided and args.fail_on_noisy:
        print(f"noisy or missing (rerun to decide): {', '.join(undecided)}", file=sys.stderr)
        return 1
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    with BenchStore(args.db, read_only=True) as store:
        comparison = _compare(store, args.base, args.head, args)
        results = store.results(comparison.head.run_id) if comparison.head else []
    print(comparison_table(comparison))
    for note in comparison.notes:
        print(f"warning: {note}", file=sys.stderr)
    if args.markdown:
        write_text(args.markdown, markdown_summary(results, comparison))
    return _exit_for(comparison, args)


def history_window(base: str) -> int | None:
    """N of a ``history[:N]`` base (5 when left out); None when ``base`` is not one."""
    if not base.startswith("history"):
        return None
    match = re.fullmatch(r"history(?::(\d+))?", base, re.ASCII)
    window = int(match.group(1) or 5) if match else 0
    if window < 1:
        raise ConfigError(
            f"bad base {base!r}: give 'history' or 'history:N' (N earlier runs pooled, N >= 1), "
            f"or {RUN_REFERENCES}"
        )
    return window


def _compare(
    store: BenchStore, base: str | int, head: str | int, args: argparse.Namespace
) -> Comparison:
    window = history_window(base) if isinstance(base, str) else None
    if window is not None:
        return compare_history(store, head, window=window, threshold=args.threshold,
                               alpha=args.alpha, any_environment=args.any_environment)  # fmt: skip
    return compare(store, base, head, threshold=args.threshold, alpha=args.alpha,
                   any_environment=args.any_environment)  # fmt: skip


def _auto_base(store: BenchStore, run_id: int) -> int | None:
    info = store.run(run_id)
    older = [r for r in store.runs(fingerprint=info.fingerprint) if r.created_at <= info.created_at
             and r.run_id != run_id]  # fmt: skip
    return older[0].run_id if older else None


def _cmd_report(args: argparse.Namespace) -> int:
    if not args.html and not args.markdown:
        raise ConfigError("report: give --html FILE and/or --markdown FILE")
    with BenchStore(args.db, read_only=True) as store:
        run_id = store.resolve_run(args.run)
        base: int | str | None = None
        if args.base == "auto":
            base = _auto_base(store, run_id)
        elif args.base != "none":
            base = args.base
        comparison = None if base is None else _compare(store, base, run_id, args)
        for note in comparison.notes if comparison else []:
            print(f"warning: {note}", file=sys.stderr)
        if args.html:
            write_text(args.html, html_report(store, run_id, comparison=comparison))
            print(f"wrote {args.html}")
        if args.markdown:
            write_text(args.markdown, markdown_summary(store.results(run_id), comparison))
            print(f"wrote {args.markdown}")
    return _exit_for(comparison, args) if comparison else 0


def _cmd_list(args: argparse.Namespace) -> int:
    with BenchStore(args.db, read_only=True) as store:
        if args.cases:
            for key, _, _ in store.cases():
                print(key)
            return 0
        for info in store.runs():
            env = info.environment
            print(f"{info.run_id:>5}  {info.created_at:%Y-%m-%d %H:%M:%S}  "
                  f"{(env.git_commit or '-')[:10]:<10}  {env.fingerprint}  "
                  f"{info.n_results:>4} results  {info.label or ''}")  # fmt: skip
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    with BenchStore(args.db, read_only=True) as store:
        ids = [store.resolve_run(ref) for ref in args.runs]
        export_runs(store, ids, args.out)
    print(f"exported {len(ids)} runs to {args.out}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    archives = [read_archive(path) for path in args.files]  # every file valid before writing
    with BenchStore(args.db) as store:
        for path, runs in zip(args.files, archives, strict=True):
            added = add_runs(store, runs)
            print(f"{path}: imported {len(added)} runs {added}")
    return 0


COMMANDS = {
    "run": _cmd_run,
    "compare": _cmd_compare,
    "report": _cmd_report,
    "list": _cmd_list,
    "export": _cmd_export,
    "import": _cmd_import,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return COMMANDS[args.command](args)
    except TorchsmithError as exc:
        print(f"torchsmith bench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path that is a directory, a file, unwritable: not a regression
        print(f"torchsmith bench {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
