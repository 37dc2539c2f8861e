"""HTML and markdown reports."""

from __future__ import annotations

import re
from pathlib import Path

from plotly.offline import get_plotlyjs

from torchsmith.bench import BenchStore, compare, html_report, markdown_summary, write_text
from torchsmith.interfaces import Environment


def _store_two_runs(db_path: Path, make_result) -> BenchStore:
    store = BenchStore(db_path)
    base = make_result("model.forward", 1e-3, params={"batch_size": 8})
    store.save_run([base, make_result("a|b", 2e-3)])
    head = make_result("model.forward", 1.3e-3, params={"batch_size": 8}, seed=4)
    head.baseline = "reference[batch_size=8]"
    head.extra.update(baseline_ratio=1.3, baseline_ratio_ci_low=1.2, baseline_ratio_ci_high=1.4)
    store.save_run([head, make_result("a|b", 2e-3, seed=5)])
    return store


def test_html_report_is_self_contained_and_complete(db_path: Path, make_result) -> None:
    with _store_two_runs(db_path, make_result) as store:
        comparison = compare(store, 1, 2)
        html = html_report(store, 2, comparison=comparison)
    # plotly.js inline, nothing fetched from a network
    assert "Plotly.newPlot" in html and len(html) > 1_000_000
    assert not re.search(r"<script[^>]+src=", html)
    assert not re.search(r"<link[^>]+href=.http", html)
    # the only CDN address is plotly.js's own default for geo maps, which no chart uses
    assert html.count("cdn.plot.ly") == get_plotlyjs().count("cdn.plot.ly")
    # comparison, baselines, history and environment sections
    assert "model.forward[batch_size=8]" in html and 'class="regressed"' in html
    assert "Side by side with baselines" in html
    # the results table has the ratio to the baseline, as the markdown one does
    assert "<th>vs baseline</th>" in html
    assert "<td>1.300x reference[batch_size=8] [1.200, 1.400]</td>" in html
    assert html.count("plotly-graph-div") >= 4  # comparison, baseline, two histories
    assert "fp-test" in html and "abc1234" in html
    assert "a|b" in html and "<script>alert" not in html


def test_html_escapes_what_it_is_given(db_path: Path, make_result) -> None:
    env = Environment(fingerprint="fp", cpu="<script>alert(1)</script>")
    with BenchStore(db_path) as store:
        store.save_run([make_result(env=env)])
        html = html_report(store, "latest")
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html


def test_markdown_summary_tables(db_path: Path, make_result) -> None:
    with _store_two_runs(db_path, make_result) as store:
        comparison = compare(store, 1, 2)
        text = markdown_summary(store.results(2), comparison)
    lines = text.splitlines()
    header = "| case | base | head | ratio | 95% CI | p | verdict |"
    assert header in lines
    row = next(line for line in lines if line.startswith("| `model.forward"))
    assert "regressed" in row and re.search(r"\| 1\.[23]\d\d \| \[1\.\d{3}, 1\.\d{3}\] \|", row)
    assert any(line.startswith("| `a\\|b`") for line in lines)  # pipes escaped
    assert "1 regressed" in text and "1 unchanged" in text
    assert "1.300x `reference[batch_size=8]`" in text


def test_write_text_is_atomic_and_readable(tmp_path: Path) -> None:
    target = write_text(tmp_path / "out" / "r.md", "hello")
    assert target.read_text() == "hello"
    assert target.stat().st_mode & 0o044  # not the 0600 of a temp file
    assert [p.name for p in target.parent.iterdir()] == ["r.md"]


def test_markdown_warns_when_the_machine_was_busy(make_result) -> None:
    import os

    calm, busy = make_result("a"), make_result("b")
    calm.extra["load_average_1m"] = 0.1
    busy.extra["load_average_1m"] = 4.0 * (os.cpu_count() or 1)
    assert "load average" not in markdown_summary([calm])
    assert "load average reached" in markdown_summary([calm, busy])
    # Judged by the cores of the machine that measured, not of the one that reports.
    big = make_result("c")
    big.extra.update(load_average_1m=6.0 + os.cpu_count(), logical_cpus=64 + os.cpu_count())
    assert "load average" not in markdown_summary([calm, big])
    small = make_result("d")
    small.extra.update(load_average_1m=3.0, logical_cpus=2)
    assert "load average reached 3.0 on 2 cores" in markdown_summary([calm, small])


def test_live_progress_shows_case_and_samples() -> None:
    import io

    from rich.console import Console

    from torchsmith.bench._progress import live_progress

    out = io.StringIO()
    seen = []
    console = Console(file=out, force_terminal=False, width=120)
    with live_progress(lambda *a: seen.append(a), console=console) as update:
        update("matmul[n=64]", 0, 2, 17)
        update("matmul[n=64]", 1, 2, 0)
    assert seen == [("matmul[n=64]", 0, 2, 17), ("matmul[n=64]", 1, 2, 0)]
    assert "matmul[n=64]" in out.getvalue() and "1/2" in out.getvalue()


def test_markdown_says_which_cases_had_a_round_left_out(make_result) -> None:
    result = make_result("slow.case", 1e-3)
    result.extra.update(rounds_dropped=1.0, dropped_round_ratio=1.37)
    text = markdown_summary([result, make_result("fine.case", 1e-3)])
    assert "left out of the pool" in text and "`slow.case` (1.370x the median round)" in text
    assert "Its samples are stored, apart from the statistics." in text
    assert "fine.case` (" not in text
    assert "left out" not in markdown_summary([make_result("fine.case", 1e-3)])


def test_peak_memory_and_extras_appear_in_both_reports(db_path: Path, make_result) -> None:
    result = make_result("trainer.step", 1e-3)
    result.peak_memory_bytes = 300 * 2**20
    result.extra.update(data_wait_fraction=0.125, rss_growth_bytes=32 * 2**20)
    with BenchStore(db_path) as store:
        run_id = store.save_run([result])
        html = html_report(store, run_id)
        text = markdown_summary(store.results(run_id))
    for report in (html, text):
        assert "300.0 MiB" in report
        assert "data_wait_fraction 12.5%" in report and "rss_growth_bytes 32.0 MiB" in report
    results_rows = text.split("### Results")[1].split("###")[0]
    assert "MiB" not in results_rows  # the results table stays narrow


def test_times_show_in_the_unit_they_round_to() -> None:
    from torchsmith.bench._markdown import format_value

    shown = [format_value(v) for v in (0.0009996, 0.9996, 1234.0, 0.01234, 1.5e-6, 5e-10, 0.0)]
    assert shown == ["1 ms", "1 s", "1230 s", "12.3 ms", "1.5 µs", "0.5 ns", "0 ns"]
    assert not any("e+" in text for text in shown)


def test_a_case_name_with_backticks_stays_one_code_span(make_result) -> None:
    """GitHub would render the rest of the cell as markdown (or HTML) once a backtick in
    the name closed the span."""
    text = markdown_summary([make_result('a`b[p="<b>"]'), make_result("``x``")])
    assert '| `` a`b[p="<b>"] `` |' in text
    assert "| ``` ``x`` ``` |" in text
