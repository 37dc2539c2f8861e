"""The markdown summary: a table fit for a CI job summary or a pull-request comment."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence

from torchsmith.interfaces import BenchmarkResult

from ._compare import Comparison
from ._registry import case_key

VERDICT_MARK = {
    "regressed": "🔴 regressed",
    "improved": "🟢 improved",
    "unchanged": "⚪ unchanged",
    "noisy": "🟠 noisy",
    "new": "🆕 new",
    "missing": "❔ missing",
}


def format_value(value: float | None, unit: str = "s") -> str:
    """A time in the largest unit that keeps it >= 1 (s, ms, us, ns); other units as is."""
    if value is None:
        return "-"
    if unit != "s":
        return f"{value:.4g} {unit}"
    for scale, name in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        shown = float(f"{value / scale:.3g}")  # as printed: 0.9996 ms is 1 ms, not 1e+03 µs
        if abs(shown) >= 1:
            return f"{shown:g} {name}"
    return f"{float(f'{value / 1e-9:.3g}'):g} ns"


# Extras with a column of their own, or none (the core count only qualifies the load
# average); the rest are listed as notes.
SHOWN_EXTRAS = ("throughput", "baseline_ratio", "baseline_ratio_ci_low",
                "baseline_ratio_ci_high", "baseline_p_value", "logical_cpus")  # fmt: skip


def format_bytes(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f} MiB"


def _extra_value(name: str, value: float) -> str:
    if name.endswith("_bytes"):
        return format_bytes(value)
    if name.endswith(("_fraction", "_spread")):
        return f"{value:.1%}"
    return f"{value:.4g}"


def extra_notes(result: BenchmarkResult) -> str:
    """The result's other extras as ``name value`` pairs, e.g. ``data_wait_fraction 12.0%``."""
    pairs = [(k, v) for k, v in sorted(result.extra.items()) if k not in SHOWN_EXTRAS]
    return ", ".join(f"{name} {_extra_value(name, value)}" for name, value in pairs) or "-"


def details_table(results: Sequence[BenchmarkResult]) -> str:
    """Peak memory and the other extras, kept out of the results table to keep it narrow."""
    lines = ["| case | peak memory | notes |", "|---|---:|---|"]
    for r in sorted(results, key=lambda r: case_key(r.case, dict(r.params))):
        lines.append(
            f"| {_code(case_key(r.case, dict(r.params)))} | "
            f"{format_bytes(r.peak_memory_bytes)} | {_cell(extra_notes(r))} |"
        )
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    """``text`` as a code span in a table cell, fenced by one backtick more than the longest
    run it holds (a case named ``a`b`` must not end the span early)."""
    text = _cell(text)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    pad = " " if longest else ""  # CommonMark strips one space each side
    return f"{'`' * (longest + 1)}{pad}{text}{pad}{'`' * (longest + 1)}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def comparison_table(comparison: Comparison) -> str:
    lines = [
        "| case | base | head | ratio | 95% CI | p | verdict |",
        "|---|---:|---:|---:|---|---:|---|",
    ]
    for row in comparison.rows:
        interval = "-" if row.ci_low is None else f"[{row.ci_low:.3f}, {row.ci_high:.3f}]"
        p_value = "-" if row.p_value is None else f"{row.p_value:.2g}"
        lines.append(
            f"| {_code(row.key)} | {format_value(row.base_median, row.unit)} | "
            f"{format_value(row.head_median, row.unit)} | {_ratio(row.ratio)} | {interval} | "
            f"{p_value} | {VERDICT_MARK[row.verdict]} |"
        )
    return "\n".join(lines)


def results_table(results: Sequence[BenchmarkResult]) -> str:
    lines = [
        "| case | median | 95% CI | n | throughput | vs baseline |",
        "|---|---:|---|---:|---:|---|",
    ]
    for r in sorted(results, key=lambda r: case_key(r.case, dict(r.params))):
        s = r.statistics
        interval = (
            "-"
            if s.ci_low is None or s.ci_high is None
            else f"[{format_value(s.ci_low, r.unit)}, {format_value(s.ci_high, r.unit)}]"
        )
        throughput = r.extra.get("throughput")
        speed = "-" if throughput is None else f"{throughput:,.0f}/s"
        lines.append(
            f"| {_code(case_key(r.case, dict(r.params)))} | {format_value(s.median, r.unit)} | "
            f"{interval} | {s.n} | {speed} | {versus_baseline(r, _code)} |"
        )
    return "\n".join(lines)


def versus_baseline(r: BenchmarkResult, name: Callable[[str], str] = str) -> str:
    """``0.873x <baseline> [0.861, 0.885]``: the ratio to the baseline measured side by side
    with the case, with its 95% interval; "-" for a case without one."""
    if not r.baseline or "baseline_ratio" not in r.extra:
        return "-"
    low, high = r.extra["baseline_ratio_ci_low"], r.extra["baseline_ratio_ci_high"]
    return f"{r.extra['baseline_ratio']:.3f}x {name(r.baseline)} [{low:.3f}, {high:.3f}]"


def _busy_note(results: Sequence[BenchmarkResult]) -> str:
    """A warning where a case ran while the load average exceeded its machine's cores
    (recorded with the load; results stored before that are judged by this machine's)."""
    busy = [
        (r.extra["load_average_1m"], int(r.extra.get("logical_cpus") or os.cpu_count() or 1))
        for r in results
        if "load_average_1m" in r.extra
    ]
    busy = [(load, cores) for load, cores in busy if load > cores]
    if not busy:
        return ""
    load, cores = max(busy)
    return (
        f"> ⚠️ The load average reached {load:.1f} on {cores} cores while measuring: "
        "other work competed for the CPU, so treat these timings with suspicion."
    )


def _dropped_note(results: Sequence[BenchmarkResult]) -> str:
    dropped = [r for r in results if r.extra.get("rounds_dropped")]
    if not dropped:
        return ""
    names = ", ".join(
        f"{_code(case_key(r.case, dict(r.params)))} "
        f"({r.extra.get('dropped_round_ratio', 1.0):.3f}x the median round)"
        for r in sorted(dropped, key=lambda r: case_key(r.case, dict(r.params)))
    )
    return (
        "> ⚠️ A round far from the others was left out of the pool (a disturbed worker "
        f"process): {names}. Its samples are stored, apart from the statistics."
    )


def markdown_summary(
    results: Sequence[BenchmarkResult], comparison: Comparison | None = None, title: str = ""
) -> str:
    """The summary: the comparison table when there is one, then this run's results."""
    parts = [f"## {title or 'torchsmith-bench'}"]
    if comparison is not None:
        base = comparison.base_name
        head = f"run {comparison.head.run_id}" if comparison.head else "head"
        counts = ", ".join(f"{n} {verdict}" for verdict, n in sorted(comparison.counts.items()))
        parts += [
            f"{head.capitalize()} against {base}: {counts or 'no cases'}. A change is called when "
            f"Mann-Whitney p < {comparison.alpha} and the ratio of medians is beyond "
            f"±{comparison.threshold:.0%}; ratio > 1 is slower.",
            comparison_table(comparison),
            *(f"> ⚠️ {note}" for note in comparison.notes),
        ]
    parts += [note for note in (_busy_note(results), _dropped_note(results)) if note]
    if results:
        env = results[0].environment
        parts += [
            "### Results",
            results_table(results),
            "### Memory and notes",
            details_table(results),
            f"Environment `{env.fingerprint}`: {env.cpu or '?'}, GPU {env.gpu or 'none'}, "
            f"torch {env.torch_version or '?'}, {env.num_threads} threads, commit "
            f"`{(env.git_commit or '?')[:10]}` ({env.git_branch or '?'}).",
        ]
    return "\n\n".join(parts) + "\n"
