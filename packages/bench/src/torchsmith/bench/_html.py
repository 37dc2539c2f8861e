"""The self-contained HTML report: Jinja2 template, Plotly charts, plotly.js inlined.

The file needs no network: plotly.js is embedded once in the page head and every chart is a
``<div>`` that uses it, so the report opens offline (and as a CI artifact).
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import metadata, resources
from pathlib import Path

import jinja2
import plotly.io as pio
import plotly.offline
from plotly.graph_objects import Figure

from torchsmith.interfaces import BenchmarkResult, Environment, atomic_write

from ._charts import baseline_figure, comparison_figure, history_figure
from ._compare import Comparison, history
from ._markdown import extra_notes, format_bytes, format_value, versus_baseline
from ._registry import case_key
from ._stats import DEFAULT_ALPHA, DEFAULT_THRESHOLD
from ._store import BenchStore

ENV_FIELDS = (
    "fingerprint", "git_commit", "git_branch", "hostname", "cpu", "gpu", "python_version",
    "torch_version", "cuda_version", "num_threads",
)  # fmt: skip


def _div(figure: Figure) -> str:
    return str(pio.to_html(figure, include_plotlyjs=False, full_html=False))


def _template() -> jinja2.Template:
    text = resources.files("torchsmith.bench").joinpath("templates/report.html.j2").read_text()
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(text)


def _baseline_chart(results: list[BenchmarkResult]) -> str | None:
    paired = [r for r in results if r.baseline and "baseline_ratio" in r.extra]
    if not paired:
        return None
    keys = [f"{case_key(r.case, dict(r.params))} / {r.baseline}" for r in paired]
    ratios = [
        (r.extra["baseline_ratio"], r.extra["baseline_ratio_ci_low"],
         r.extra["baseline_ratio_ci_high"])
        for r in paired
    ]  # fmt: skip
    return _div(baseline_figure(keys, ratios))


def _environments(
    results: list[BenchmarkResult], comparison: Comparison | None
) -> list[tuple[str, dict[str, object]]]:
    envs: list[tuple[str, Environment]] = []
    if comparison is not None and comparison.base is not None:
        envs.append((f"base ({comparison.base_name})", comparison.base.environment))
    if results:
        envs.append(("this run", results[0].environment))
    return [(name, env.model_dump()) for name, env in envs]


def html_report(
    store: BenchStore,
    run: int | str = "latest",
    *,
    comparison: Comparison | None = None,
    max_history: int = 100,
    title: str = "torchsmith-bench report",
) -> str:
    """The report of one stored run: comparison (if given), baselines, history, environment."""
    info = store.run(store.resolve_run(run))
    results = store.results(info.run_id)
    keys = sorted({case_key(r.case, dict(r.params)) for r in results})
    history_charts = []
    for key in keys:
        series = history(store, key, fingerprint=info.fingerprint, limit=max_history)
        history_charts.append(_div(history_figure(series)))
    threshold = comparison.threshold if comparison else DEFAULT_THRESHOLD
    return _template().render(
        title=title,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        version=metadata.version("torchsmith-bench"),
        plotly_js=plotly.offline.get_plotlyjs(),
        alpha=comparison.alpha if comparison else DEFAULT_ALPHA,
        threshold_pct=f"{threshold:.0%}",
        comparison=comparison,
        counts=sorted(comparison.counts.items()) if comparison else [],
        comparison_chart=_div(comparison_figure(comparison)) if comparison else "",
        baseline_chart=_baseline_chart(results),
        run=info,
        results=sorted(results, key=lambda r: case_key(r.case, dict(r.params))),
        history_charts=history_charts,
        environments=_environments(results, comparison),
        env_fields=ENV_FIELDS,
        fmt=format_value,
        mib=format_bytes,
        notes=extra_notes,
        versus=versus_baseline,
        key=lambda r: case_key(r.case, dict(r.params)),
    )


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically: temp file in the same directory, fsync, rename."""
    return atomic_write(path, text)
