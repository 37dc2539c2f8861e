"""Plotly figures for the HTML report: history with bands and steps, and A/B ratios.

Ratios are drawn as points with interval whiskers around a line at 1 (bars would start
at 0 and hide a 5% difference).
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from ._compare import Comparison, History

VERDICT_COLOR = {
    "regressed": "#d62728",
    "improved": "#2ca02c",
    "unchanged": "#7f7f7f",
    "noisy": "#ff7f0e",
    "new": "#1f77b4",
    "missing": "#9467bd",
}


def history_figure(history: History) -> go.Figure:
    """Median per run with its bootstrap interval as a band; detected steps as lines."""
    points = history.points
    x = list(range(1, len(points) + 1))
    labels = [
        f"run {p.run_id} · {(p.git_commit or '?')[:10]} · {p.created_at:%Y-%m-%d %H:%M}"
        for p in points
    ]
    low = [p.ci_low if p.ci_low is not None else p.median for p in points]
    high = [p.ci_high if p.ci_high is not None else p.median for p in points]
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=x, y=high, mode="lines", line={"width": 0}, showlegend=False,
                                hoverinfo="skip"))  # fmt: skip
    figure.add_trace(
        go.Scatter(x=x, y=low, mode="lines", line={"width": 0}, fill="tonexty",
                   fillcolor="rgba(31,119,180,0.2)", name="95% CI", hoverinfo="skip")
    )  # fmt: skip
    figure.add_trace(
        go.Scatter(x=x, y=[p.median for p in points], mode="lines+markers", name="median",
                   text=labels, hovertemplate="%{text}<br>median %{y:.4g} s<extra></extra>")
    )  # fmt: skip
    for index in history.steps:
        commit = (points[index].git_commit or f"run {points[index].run_id}")[:10]
        figure.add_vline(x=index + 0.5, line_dash="dash", line_color="#d62728",
                         annotation_text=f"step at {commit}")  # fmt: skip
    figure.update_layout(
        title=history.key, xaxis_title="run (oldest first)", yaxis_title="seconds per call",
        height=320, margin={"l": 60, "r": 20, "t": 50, "b": 40},
    )  # fmt: skip
    return figure


def comparison_figure(comparison: Comparison) -> go.Figure:
    """Ratio head/base per case with its interval, coloured by verdict."""
    rows = [row for row in comparison.rows if row.ratio is not None]
    ratios = [row.ratio or 1.0 for row in rows]
    figure = go.Figure(
        go.Scatter(
            x=ratios,
            y=[row.key for row in rows],
            mode="markers",
            marker={"size": 11, "color": [VERDICT_COLOR[row.verdict] for row in rows]},
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [(row.ci_high or r) - r for row, r in zip(rows, ratios, strict=True)],
                "arrayminus": [r - (row.ci_low or r) for row, r in zip(rows, ratios, strict=True)],
            },
            text=[row.verdict for row in rows],
            hovertemplate="%{y}<br>ratio %{x:.3f}<br>%{text}<extra></extra>",
        )
    )
    for edge in (1.0, 1.0 + comparison.threshold, 1.0 / (1.0 + comparison.threshold)):
        figure.add_vline(x=edge, line_dash="solid" if edge == 1.0 else "dot", line_color="#444")
    low = min([row.ci_low or 1.0 for row in rows] + [0.9])
    high = max([row.ci_high or 1.0 for row in rows] + [1.1])
    figure.update_layout(
        title="head / base (ratio of medians, 95% bootstrap CI; > 1 is slower)",
        xaxis={"range": [low * 0.98, high * 1.02]}, height=120 + 30 * max(len(rows), 1),
        margin={"l": 220, "r": 20, "t": 50, "b": 40},
    )  # fmt: skip
    return figure


def baseline_figure(keys: Sequence[str], ratios: Sequence[tuple[float, float, float]]) -> go.Figure:
    """Within-run A/B: each case against its declared baseline (interleaved samples)."""
    figure = go.Figure(
        go.Scatter(
            x=[r for r, _, _ in ratios],
            y=list(keys),
            mode="markers",
            marker={"size": 11},
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [high - r for r, _, high in ratios],
                "arrayminus": [r - low for r, low, _ in ratios],
            },
        )
    )
    figure.add_vline(x=1.0, line_color="#444")
    figure.update_layout(
        title="case / its baseline, timed side by side (ratio of medians; > 1 is slower)",
        height=120 + 30 * max(len(keys), 1), margin={"l": 220, "r": 20, "t": 50, "b": 40},
    )  # fmt: skip
    return figure
