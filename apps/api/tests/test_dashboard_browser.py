"""The dashboard in a real headless Chromium: it loads, and a training job's curve grows live."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)",
)
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _post(url: str, body: dict, key: str) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict = json.load(response)
        return result


def _points(page) -> int:
    return int(
        page.evaluate(
            "() => { const d = document.getElementById('curve').data || [];"
            " return d.length ? d[0].x.length : 0; }"
        )
    )


@contextlib.contextmanager
def _dashboard(live_server: str) -> Iterator[tuple[Any, list[str]]]:
    """The dashboard open in headless Chromium and connected to the API: (page, the
    JavaScript errors it raised)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(live_server + "/")
            assert page.title() == "torchsmith"
            page.wait_for_function("() => typeof Plotly !== 'undefined'", timeout=20_000)
            page.wait_for_function(
                "() => document.getElementById('conn').textContent === 'connected'",
                timeout=20_000,
            )
            yield page, errors
        finally:
            browser.close()


def test_the_page_loads_and_a_jobs_curve_grows_live(live_server: str, api_key: str) -> None:
    with _dashboard(live_server) as (page, errors):
        job = _post(
            live_server + "/api/v1/train",
            {"recipe": "demo", "overrides": ["steps=60", "delay=0.1"]},
            api_key,
        )
        page.wait_for_selector(f"#jobs tbody tr[data-id='{job['id']}']", timeout=20_000)
        page.wait_for_function(
            "() => { const d = document.getElementById('curve').data || [];"
            " return d.length && d[0].x.length >= 3; }",
            timeout=30_000,
        )
        first = _points(page)
        page.wait_for_function(
            f"() => document.getElementById('curve').data[0].x.length > {first}",
            timeout=30_000,
        )
        assert _points(page) > first
        assert page.locator("#curve-job").text_content() == job["id"]
        assert errors == []


def test_a_finished_jobs_curve_holds_its_steps_and_evaluations_only(
    live_server: str, api_key: str
) -> None:
    """The end event repeats the run's metrics (and a NaN is the string "NaN"): neither is
    a curve of its own."""
    with _dashboard(live_server) as (page, errors):
        job = _post(
            live_server + "/api/v1/train",
            {"recipe": "demo", "overrides": ["steps=4", "final=1"]},
            api_key,
        )
        row = f"#jobs tbody tr[data-id='{job['id']}']"
        page.wait_for_selector(row, timeout=20_000)
        page.click(row)  # follow this job (the page may have picked an older one)
        page.wait_for_function(
            "() => ['succeeded', 'job finished'].includes("
            "document.getElementById('curve-status').textContent)",
            timeout=30_000,
        )
        assert page.locator("#curve-job").text_content() == job["id"]
        names = page.evaluate(
            "() => (document.getElementById('curve').data || []).map((t) => t.name)"
        )
        assert names == ["loss", "eval val_loss"]
        ys = page.evaluate("() => document.getElementById('curve').data[1].y")
        assert ys == [None]  # NaN: a gap in the curve, not the text "NaN"
        assert errors == []
