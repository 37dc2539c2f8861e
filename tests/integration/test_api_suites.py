"""torchsmith-api over the real suites: hardware, training, generation, model tests, bench."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torchsmith.api")
from fastapi.testclient import TestClient

from torchsmith.api import KeyStore, Settings, create_app
from torchsmith.interfaces import (
    BenchmarkResult,
    Environment,
    HardwareInfo,
    Statistics,
    TrainingEvent,
)


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    settings = Settings(data_dir=tmp_path / "data", workers=1)
    _, key = KeyStore(settings.keys_path).create("integration")
    with TestClient(create_app(settings)) as client:
        yield client, {"Authorization": f"Bearer {key}"}


def _wait(client: TestClient, job_id: str, timeout: float = 240.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}").json()
        if status["state"] not in ("queued", "running"):
            return status
        assert time.monotonic() < deadline, f"job {job_id} still {status['state']}"
        time.sleep(0.2)


def test_hardware_is_the_testing_suites_detection(app_client) -> None:
    client, _ = app_client
    info = HardwareInfo.read(client.get("/api/v1/hardware").json())
    from torchsmith.testing import detect_hardware

    local = detect_hardware()
    assert info.cpu_cores_logical == local.cpu_cores_logical
    assert info.torch_version == local.torch_version


def test_a_recipe_trains_as_a_job_with_its_events_stored(app_client) -> None:
    client, auth = app_client
    recipes = client.get("/api/v1/train/recipes").json()
    assert "digits-classifier" in recipes
    unknown = client.post("/api/v1/train", json={"recipe": "nope"}, headers=auth)
    assert unknown.status_code == 422 and "digits-classifier" in unknown.json()["detail"]
    assert unknown.json()["message"] == unknown.json()["detail"]  # every 422 has a message
    body = {
        "recipe": "digits-classifier",
        "overrides": [
            "training.max_steps=40",
            "training.log_every=10",
            "eval.every_steps=20",
            "checkpoint.every_steps=40",
        ],
    }
    job = client.post("/api/v1/train", json=body, headers=auth).json()
    status = _wait(client, job["id"])
    assert status["state"] == "succeeded", status["error"]
    events = [
        TrainingEvent.read(e) for e in client.get(f"/api/v1/train/{job['id']}/metrics").json()
    ]
    steps = [e for e in events if e.kind == "step"]
    assert [e.step for e in steps][:4] == [10, 20, 30, 40]
    assert all("loss" in e.metrics for e in steps)
    assert any(e.kind == "eval" for e in events)
    files = {f["path"] for f in client.get(f"/api/v1/jobs/{job['id']}/files").json()}
    assert any(p.endswith(".safetensors") for p in files), files


@pytest.mark.parametrize(
    ("recipe", "overrides", "field"),
    [
        ("digits-classifier",
         ["model={kind: import, target: 'os:system', kwargs: {command: 'true'}}"],
         "model.kind: 'import' runs code"),
        ("digits-classifier",
         ["data={kind: import, target: 'os:system', kwargs: {command: 'true'}}"],
         "data.kind: 'import' runs code"),
        ("digits-classifier", ["task={kind: import, target: 'os:getcwd'}"],
         "task.kind: 'import' runs code"),
        ("digits-classifier", ["eval.metrics={leak: 'os:getcwd'}"], "eval.metrics: each runs code"),
        ("char-gpt", ["data.paths=['/etc']"], "data.paths: the server's files"),
    ],
)  # fmt: skip
def test_a_request_may_tune_a_recipe_not_run_code_or_read_files(
    app_client, recipe: str, overrides: list[str], field: str
) -> None:
    """Overrides that would import and call anything by path, or train on the server's
    files, are a 422 naming the field, before a job exists."""
    client, auth = app_client
    body = {"recipe": recipe, "overrides": overrides}
    response = client.post("/api/v1/train", json=body, headers=auth)
    assert response.status_code == 422, response.text
    assert "not allowed through the API" in response.json()["detail"]
    assert field in response.json()["detail"]
    assert client.get("/api/v1/jobs", params={"kind": "train"}).json() == []


def test_an_override_whose_aliases_expand_without_bound_is_a_short_422(app_client) -> None:
    """Within the 500 characters an override may have, YAML aliases can stand for 9**9
    values: the check, and the error that shows the value, must not write them all out."""
    client, auth = app_client
    levels = ["l0: &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = "{" + ", ".join(levels) + "}"
    assert len(bomb) < 500
    for override in (f"model.hidden={bomb}", f"extra={bomb}"):
        body = {"recipe": "digits-classifier", "overrides": [override]}
        response = client.post("/api/v1/train", json=body, headers=auth)
        assert response.status_code == 422, response.text
        assert "expands through its aliases to" in response.json()["detail"]
        assert len(response.content) < 2000
    assert client.get("/api/v1/jobs", params={"kind": "train"}).json() == []


def test_the_training_runner_itself_takes_only_shipped_recipes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator's own ``runners`` setting may skip the route's checks; the default
    runner still refuses a recipe name that ``load_config`` would read as a file."""
    from torchsmith.api._tasks import run_train
    from torchsmith.interfaces import RegistryError

    (tmp_path / "x.toml").write_text('name = "x"\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RegistryError, match=r"unknown recipe 'x\.toml'"):
        run_train({"recipe": "x.toml"}, ctx=None)  # type: ignore[arg-type]


def test_a_preset_is_a_preset_not_a_file_on_the_server(app_client, tmp_path: Path) -> None:
    """``generate()`` also reads a spec file by path; through the API only presets count."""
    client, auth = app_client
    body = {"preset": "config.json"}  # a name the request schema allows
    response = client.post("/api/v1/generator/render", json=body, headers=auth)
    assert response.status_code == 422 and "unknown preset 'config.json'" in response.text


def test_a_generated_model_downloads_as_a_zip(app_client) -> None:
    client, auth = app_client
    assert "gpt2" in client.get("/api/v1/generator/families").json()
    body = {
        "preset": "gpt2",
        "check": False,
        "overrides": ["n_layer=1", "n_embd=32", "n_head=2", "vocab_size=64", "n_positions=32"],
    }
    job = client.post("/api/v1/generator/render", json=body, headers=auth).json()
    status = _wait(client, job["id"])
    assert status["state"] == "succeeded", status["error"]
    artifact = client.get(f"/api/v1/generator/{job['id']}").json()
    assert artifact["family"] == "gpt2"
    archive = zipfile.ZipFile(
        io.BytesIO(client.get(f"/api/v1/generator/{job['id']}/download").content)
    )
    names = set(archive.namelist())
    assert {"model.py", "test_model.py"} <= names
    listed = {f["path"]: f["sha256"] for f in artifact["files"]}
    import hashlib

    for path, digest in listed.items():
        assert hashlib.sha256(archive.read(path)).hexdigest() == digest


def _result(case: str, scale: float, env: Environment) -> BenchmarkResult:
    samples = [scale * (1.0 + 0.01 * (i % 5)) * 1e-3 for i in range(30)]
    ordered = sorted(samples)
    stats = Statistics(
        n=30,
        median=ordered[15],
        mean=sum(samples) / 30,
        stdev=1e-5,
        iqr=2e-5,
        min=ordered[0],
        max=ordered[-1],
        ci_low=ordered[12],
        ci_high=ordered[18],
    )
    return BenchmarkResult(
        case=case, params={"n": 8}, samples=samples, statistics=stats, environment=env
    )


def test_bench_routes_read_the_bench_store(tmp_path: Path) -> None:
    from torchsmith.bench import BenchStore

    settings = Settings(data_dir=tmp_path / "data")
    env = Environment(fingerprint="same-machine")
    with BenchStore(settings.data_dir / "bench.duckdb") as store:
        store.save_run([_result("matmul", 1.0, env)], environment=env, label="base")
        store.save_run([_result("matmul", 1.5, env)], environment=env, label="head")
    with TestClient(create_app(settings)) as client:
        runs = client.get("/api/v1/bench/runs").json()
        assert [r["label"] for r in runs] == ["head", "base"]
        assert client.get("/api/v1/bench/cases").json() == ["matmul"]
        history = client.get("/api/v1/bench/history", params={"case": "matmul"}).json()
        assert len(history) == 2 and history[0]["ci_low"] <= history[0]["median"]
        comparison = client.get("/api/v1/bench/compare/latest").json()
        (row,) = comparison["rows"]
        assert row["verdict"] == "regressed" and row["ratio"] == pytest.approx(1.5, rel=0.01)
        results = client.get(f"/api/v1/bench/runs/{runs[0]['run_id']}/results").json()
        assert BenchmarkResult.read(results[0]).samples == _result("matmul", 1.5, env).samples
        html = client.get("/api/v1/bench/report.html", params={"base": "latest~1"})
        assert html.status_code == 200 and "matmul" in html.text
        for missing in ("/api/v1/bench/runs/999/results", "/api/v1/bench/compare?base=latest~5"):
            unknown = client.get(missing)  # a 404, and the server's data path stays hidden
            assert unknown.status_code == 404, missing
            assert "no bench run matches" in unknown.json()["detail"]
            assert str(settings.data_dir) not in unknown.text


def test_bench_history_stays_in_one_environment_unless_asked(tmp_path: Path) -> None:
    from torchsmith.bench import BenchStore

    settings = Settings(data_dir=tmp_path / "data")
    here, there = Environment(fingerprint="here"), Environment(fingerprint="there")
    with BenchStore(settings.data_dir / "bench.duckdb") as store:
        for value, env in [(1.0, here), (1.1, here), (3.0, there)]:
            store.save_run([_result("matmul", value, env)], environment=env)
    with TestClient(create_app(settings)) as client:

        def points(**params: str) -> int:
            got = client.get("/api/v1/bench/history", params={"case": "matmul", **params})
            return len(got.json())

        assert points() == 1  # the newest run's machine ("there")
        assert points(fingerprint="here") == 2
        assert points(any_environment="true") == 3


@pytest.mark.slow
def test_the_model_test_suite_runs_on_a_generated_model(app_client) -> None:
    client, auth = app_client
    body = {
        "preset": "gpt2",
        "check": False,
        "overrides": ["n_layer=1", "n_embd=32", "n_head=2", "vocab_size=64", "n_positions=32"],
    }
    generated = client.post("/api/v1/generator/render", json=body, headers=auth).json()
    assert _wait(client, generated["id"])["state"] == "succeeded"
    early = client.post("/api/v1/tests", json={"generate_job": "0" * 16}, headers=auth)
    assert early.status_code == 404
    job = client.post("/api/v1/tests", json={"generate_job": generated["id"]}, headers=auth).json()
    status = _wait(client, job["id"], timeout=600)
    assert status["state"] == "succeeded", status["error"]
    report = client.get(f"/api/v1/tests/{job['id']}/report").json()["report"]
    counts = report["counts"]
    assert counts["passed"] >= 5, counts
    assert counts["failed"] == 0 and counts["error"] == 0, report["markdown"]
    checks = {c["check"] for m in report["report"]["models"] for c in m["checks"]}
    assert {"forward", "gradients", "safetensors"} <= checks


def test_a_bench_job_measures_registered_cases_and_the_server_stores_the_run(app_client) -> None:
    client, auth = app_client
    unknown = client.post("/api/v1/bench/run", json={"cases": ["no.such.case"]}, headers=auth)
    failed = _wait(client, unknown.json()["id"])
    assert failed["state"] == "failed" and "no benchmark matches 'no.such.case'" in failed["error"]
    assert "losses.ntxent" in failed["error"]  # the known cases are listed
    job = client.post(
        "/api/v1/bench/run", json={"cases": ["losses.ntxent"], "label": "api"}, headers=auth
    ).json()
    status = _wait(client, job["id"], timeout=600)
    assert status["state"] == "succeeded", status["error"]
    # "losses.ntxent" also selects its side-by-side reference, losses.ntxent_reference.
    assert status["result"]["cases"] == ["losses.ntxent", "losses.ntxent_reference"]
    runs = client.get("/api/v1/bench/runs").json()
    assert [(r["run_id"], r["label"]) for r in runs] == [(status["result"]["run_id"], "api")]
    results = client.get(f"/api/v1/bench/runs/{runs[0]['run_id']}/results").json()
    cases = {BenchmarkResult.read(r).case for r in results}
    assert cases == {"losses.ntxent", "losses.ntxent_reference"}
