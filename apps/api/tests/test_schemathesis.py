"""Property-based requests from the app's own OpenAPI schema: no input gives a 5xx."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from conftest import TEST_RUNNERS
from torchsmith.api import KeyStore, Settings, create_app

_DATA = Path(tempfile.mkdtemp(prefix="torchsmith-api-schemathesis-"))
APP = create_app(Settings(data_dir=_DATA, runners=TEST_RUNNERS, workers=1, submit_burst=5))
_, KEY = KeyStore(_DATA / "keys.duckdb").create("schemathesis")
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
# Schemathesis runs the app's lifespan itself (store, job manager) for the whole session.


@schema.parametrize()
@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_input_makes_the_server_fail(case: schemathesis.Case) -> None:
    response = case.call(headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code < 500, f"{case.method} {case.path}: {response.text[:300]}"
    anonymous = case.call(headers={"Authorization": ""})
    assert anonymous.status_code < 500
    if case.method.upper() == "POST":
        assert anonymous.status_code >= 400, f"POST {case.path} ran without a key"
