"""The HTTP surface: keys, read access, limits, validation, file routes, CORS, suites."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from conftest import wait_done
from torchsmith.api import Settings, create_app
from torchsmith.interfaces import JobStatus

TRAIN = {"recipe": "digits-mlp", "overrides": ["max_steps=3"]}


def test_state_changing_routes_need_a_key(client: TestClient, api_key: str) -> None:
    refused = client.post("/api/v1/train", json=TRAIN)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert "torchsmith serve keys create" in refused.json()["detail"]
    wrong = client.post("/api/v1/train", json=TRAIN, headers={"Authorization": "Bearer tsk_x"})
    assert wrong.status_code == 401
    forged = api_key[:-4] + ("AAAA" if not api_key.endswith("AAAA") else "BBBB")
    assert (
        client.post(
            "/api/v1/train", json=TRAIN, headers={"Authorization": f"Bearer {forged}"}
        ).status_code
        == 401
    )
    accepted = client.post(
        "/api/v1/train", json=TRAIN, headers={"Authorization": f"Bearer {api_key}"}
    )
    assert accepted.status_code == 202
    status = JobStatus.read(accepted.json())
    assert status.kind == "train"
    assert client.post(f"/api/v1/jobs/{status.id}/cancel").status_code == 401


def test_a_submitted_training_job_runs_and_reports_metrics(
    client: TestClient, auth: dict[str, str]
) -> None:
    job = client.post("/api/v1/train", json=TRAIN, headers=auth).json()
    done = wait_done(client, job["id"])
    assert done["state"] == "succeeded", done["error"]
    assert done["result"] == {"steps": 5}
    metrics = client.get(f"/api/v1/train/{job['id']}/metrics").json()
    assert [m["metrics"].get("loss") for m in metrics if m["kind"] == "step"][:2] == [1.0, 0.5]
    assert client.get(f"/api/v1/train/{job['id']}").json()["state"] == "succeeded"
    listed = client.get("/api/v1/jobs", params={"kind": "train"}).json()
    assert [j["id"] for j in listed] == [job["id"]]
    assert client.get("/api/v1/jobs", params={"kind": "bench"}).json() == []
    events = client.get(f"/api/v1/jobs/{job['id']}/events", params={"type": "status"}).json()
    assert [e["record"]["state"] for e in events][-1] == "succeeded"


def test_reads_are_public_by_default_and_keyed_when_configured(
    make_settings: Callable[..., Settings], auth: dict[str, str]
) -> None:
    with TestClient(create_app(make_settings())) as public:
        assert public.get("/api/v1/jobs").status_code == 200
    with TestClient(create_app(make_settings(read_access="key"))) as private:
        assert private.get("/api/v1/jobs").status_code == 401
        assert private.get("/api/v1/health").status_code == 401
        assert private.get("/api/v1/jobs", headers=auth).status_code == 200


def test_invalid_bodies_get_422_naming_the_field(client: TestClient, auth: dict[str, str]) -> None:
    response = client.post("/api/v1/train", json={"overrides": ["no equals sign"]}, headers=auth)
    assert response.status_code == 422
    message = response.json()["message"]
    assert "body.recipe: Field required" in message
    assert "body.overrides.0" in message
    extra = client.post("/api/v1/train", json={**TRAIN, "gpu": 1}, headers=auth)
    assert extra.status_code == 422 and "body.gpu" in extra.json()["message"]
    assert client.get("/api/v1/jobs/../../etc").status_code in (404, 422)
    assert client.get("/api/v1/jobs/NOTHEX0000000000").status_code == 422


def test_bodies_over_the_limit_are_refused(
    make_settings: Callable[..., Settings], auth: dict[str, str]
) -> None:
    with TestClient(create_app(make_settings(max_body_bytes=2048))) as small:
        big = {"recipe": "r", "overrides": [f"k{i}=" + "x" * 100 for i in range(40)]}
        response = small.post("/api/v1/train", json=big, headers=auth)
        assert response.status_code == 413
        assert "2048 bytes" in response.json()["detail"]

        def chunks():  # no Content-Length: counted as it streams
            yield b'{"recipe": "r", "overrides": ["a=' + b"x" * 3000
            yield b'"]}'

        streamed = small.post(
            "/api/v1/train", content=chunks(), headers={**auth, "Content-Type": "application/json"}
        )
        assert streamed.status_code == 413


def test_job_submission_is_rate_limited_per_key(
    make_settings: Callable[..., Settings], auth: dict[str, str]
) -> None:
    settings = make_settings(
        submit_burst=2, submit_per_minute=1, runners={"train": "torchsmith_api_testtasks:hang"}
    )
    with TestClient(create_app(settings)) as limited:
        codes = [
            limited.post("/api/v1/train", json=TRAIN, headers=auth).status_code for _ in range(3)
        ]
        assert codes == [202, 202, 429]
        refused = limited.post("/api/v1/train", json=TRAIN, headers=auth)
        assert int(refused.headers["retry-after"]) >= 1
        for job in limited.get("/api/v1/jobs").json():
            limited.post(f"/api/v1/jobs/{job['id']}/cancel", headers=auth)


def test_an_invalid_submission_spends_no_token_of_the_rate_limit(
    make_settings: Callable[..., Settings], auth: dict[str, str]
) -> None:
    """The 422 that names the mistake, however often it is made; not a 429 after the burst."""
    settings = make_settings(
        submit_burst=2, submit_per_minute=1, runners={"train": "torchsmith_api_testtasks:hang"}
    )
    with TestClient(create_app(settings)) as limited:
        for _ in range(5):
            bad = limited.post("/api/v1/train", json={**TRAIN, "bogus": 1}, headers=auth)
            assert bad.status_code == 422
            neither = limited.post("/api/v1/generator/render", json={}, headers=auth)
            assert neither.status_code == 422
        codes = [
            limited.post("/api/v1/train", json=TRAIN, headers=auth).status_code for _ in range(3)
        ]
        assert codes == [202, 202, 429]  # the burst is whole
        for job in limited.get("/api/v1/jobs").json():
            limited.post(f"/api/v1/jobs/{job['id']}/cancel", headers=auth)


def test_a_full_queue_is_a_429_that_spends_nothing(
    make_settings: Callable[..., Settings], auth: dict[str, str]
) -> None:
    settings = make_settings(
        workers=1, max_queued=2, runners={"train": "torchsmith_api_testtasks:hang"}
    )
    with TestClient(create_app(settings)) as client:
        first = client.post("/api/v1/train", json=TRAIN, headers=auth).json()
        deadline = time.monotonic() + 30
        while client.get(f"/api/v1/jobs/{first['id']}").json()["state"] == "queued":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        codes = [client.post("/api/v1/train", json=TRAIN, headers=auth).status_code
                 for _ in range(3)]  # fmt: skip
        assert codes == [202, 202, 429]
        full = client.post("/api/v1/train", json=TRAIN, headers=auth)
        assert "2 jobs are queued already (at most 2)" in full.json()["detail"]
        assert full.headers["retry-after"] == "10"
        for job in client.get("/api/v1/jobs").json():
            client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=auth)


def test_file_routes_serve_job_files_and_refuse_traversal(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    job = client.post("/api/v1/generator/render", json={"preset": "mlp-tiny"}, headers=auth).json()
    assert wait_done(client, job["id"])["state"] == "succeeded"
    (settings.data_dir / "secret.txt").write_text("top secret")
    files = client.get(f"/api/v1/jobs/{job['id']}/files").json()
    assert {f["path"] for f in files} == {"model.py", "nested/config.json", "job.log"}
    one = client.get(f"/api/v1/jobs/{job['id']}/files/nested/config.json")
    assert one.status_code == 200 and one.json() == {"width": 8}
    for evil in (
        "../../secret.txt",
        "..%2F..%2Fsecret.txt",
        "%2E%2E/%2E%2E/secret.txt",
        str(settings.data_dir / "secret.txt"),
    ):
        response = client.get(f"/api/v1/jobs/{job['id']}/files/{evil}")
        assert response.status_code in (404, 422), evil  # 422: the client folded the dots
        assert "top secret" not in response.text
    artifact = client.get(f"/api/v1/generator/{job['id']}").json()
    assert artifact["family"] == "mlp" and artifact["validated"] is True
    archive = zipfile.ZipFile(
        io.BytesIO(client.get(f"/api/v1/generator/{job['id']}/download").content)
    )
    assert sorted(archive.namelist()) == ["model.py", "nested/config.json"]
    assert archive.read("model.py") == b"import torch\n"


def test_safe_file_keeps_paths_inside_the_root(tmp_path) -> None:
    from fastapi import HTTPException

    from torchsmith.api._routes_jobs import safe_file

    root = tmp_path / "job"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "ok.txt").write_text("ok")
    (tmp_path / "outside.txt").write_text("no")
    (root / "link.txt").symlink_to(tmp_path / "outside.txt")
    assert safe_file(root, "sub/ok.txt") == root / "sub" / "ok.txt"
    for evil in (
        "../outside.txt",
        "sub/../../outside.txt",
        str(tmp_path / "outside.txt"),
        "link.txt",
        "sub",
        "missing.txt",
    ):
        with pytest.raises(HTTPException) as caught:
            safe_file(root, evil)
        assert caught.value.status_code == 404, evil


def test_a_training_jobs_listing_holds_its_results_only(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Locks and a checkpoint still being written are hidden, the ``latest`` link is not
    listed again, and a checkpoint pruned between listing and zipping is left out."""
    from torchsmith.api import _routes_jobs
    from torchsmith.api._routes_jobs import _listing, zip_dir

    root = tmp_path / "job"
    for name in ("metrics.jsonl", ".run.lock", "checkpoints/.lock",
                 "checkpoints/.tmp-step-00000004-77/state.pt",
                 "checkpoints/step-00000002/model.safetensors",
                 "checkpoints/step-00000003/model.safetensors"):  # fmt: skip
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    (root / "checkpoints" / "latest").symlink_to("step-00000003", target_is_directory=True)
    listed = [f.path for f in _listing(root)]
    assert listed == ["checkpoints/step-00000002/model.safetensors",
                      "checkpoints/step-00000003/model.safetensors", "metrics.jsonl"]  # fmt: skip

    def listing_then_prune(directory):
        files = _listing(directory)
        (directory / "checkpoints/step-00000002/model.safetensors").unlink()
        return files

    monkeypatch.setattr(_routes_jobs, "_listing", listing_then_prune)
    archive = zipfile.ZipFile(io.BytesIO(zip_dir(root)))
    assert archive.namelist() == listed[1:]


def test_generate_needs_exactly_one_of_preset_and_spec(
    client: TestClient, auth: dict[str, str]
) -> None:
    both = client.post(
        "/api/v1/generator/render", json={"preset": "a", "spec": {"family": "mlp"}}, headers=auth
    )
    assert both.status_code == 422
    neither = client.post("/api/v1/generator/render", json={}, headers=auth)
    assert neither.status_code == 422
    assert neither.json()["message"] == "give exactly one of 'preset' and 'spec'"  # as every 422


def test_every_error_answers_with_the_declared_error_body(
    client: TestClient, auth: dict[str, str]
) -> None:
    from torchsmith.api._schemas import ErrorBody

    schema = client.get("/openapi.json").json()
    train = schema["paths"]["/api/v1/train"]["post"]["responses"]
    assert {"401", "404", "413", "422", "429", "501"} <= set(train)
    assert train["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    answers = [
        client.post("/api/v1/train", json={"recipe": "r", "bogus": 1}, headers=auth),  # schema
        client.post("/api/v1/generator/render", json={}, headers=auth),  # a route's own check
        client.post("/api/v1/train", json={"recipe": "r"}),  # no key
        client.get("/api/v1/jobs/0123456789abcdef"),
    ]
    for answer in answers:
        body = ErrorBody.model_validate(answer.json())
        assert answer.status_code != 422 or body.message


def test_cors_is_off_unless_origins_are_configured(make_settings: Callable[..., Settings]) -> None:
    origin = {"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"}
    with TestClient(create_app(make_settings())) as closed:
        assert (
            "access-control-allow-origin" not in closed.get("/api/v1/jobs", headers=origin).headers
        )
    settings = make_settings(cors_origins=("http://good.example",))
    with TestClient(create_app(settings)) as open_:
        good = open_.get("/api/v1/jobs", headers={"Origin": "http://good.example"})
        assert good.headers["access-control-allow-origin"] == "http://good.example"
        evil = open_.get("/api/v1/jobs", headers=origin)
        assert "access-control-allow-origin" not in evil.headers


def test_a_missing_suite_is_a_501_naming_the_package(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, auth: dict[str, str]
) -> None:
    import importlib

    real = importlib.import_module

    def fake_import(name: str, *args: object, **kwargs: object):
        if name in ("torchsmith.generator", "torchsmith.trainer"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr("torchsmith.api._suites.importlib.import_module", fake_import)
    response = client.get("/api/v1/generator/families")
    assert response.status_code == 501
    assert "pip install torchsmith-generator" in response.json()["detail"]
    assert client.get("/api/v1/train/recipes").status_code == 501


def test_a_suite_without_the_needed_function_is_a_501(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    fake = types.ModuleType("torchsmith.bench")
    monkeypatch.setattr("torchsmith.api._suites.importlib.import_module", lambda name: fake)
    response = client.get("/api/v1/bench/cases")
    assert response.status_code == 501
    assert "torchsmith.bench.BenchStore" in response.json()["detail"]


def test_unknown_jobs_are_404(client: TestClient, auth: dict[str, str]) -> None:
    assert client.get("/api/v1/jobs/0123456789abcdef").status_code == 404
    response = client.post("/api/v1/jobs/0123456789abcdef/cancel", headers=auth)
    assert response.status_code == 404 and "no job with id" in response.json()["detail"]


def test_openapi_documents_examples_and_the_bearer_scheme(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    train = schema["components"]["schemas"]["TrainRequest"]
    assert train["examples"][0]["recipe"] == "digits-classifier"
    assert "JobStatus" in schema["components"]["schemas"]
    paths = set(schema["paths"])
    for path in (
        "/api/v1/hardware",
        "/api/v1/generator/render",
        "/api/v1/tests",
        "/api/v1/bench/compare",
        "/api/v1/train/{job_id}/stop",
        "/api/v1/jobs",
    ):
        assert path in paths
    assert client.get("/docs").status_code == 200


def test_health_lists_the_suites(client: TestClient) -> None:
    body = client.get("/api/v1/health").json()
    assert body["status"] == "ok"
    assert set(body["suites"]) == {"trainer", "losses", "generator", "bench", "testing"}


def test_a_restarted_app_shows_every_job_and_its_events(
    make_settings: Callable[..., Settings], auth: dict[str, str]
) -> None:
    settings = make_settings(
        runners={
            "train": "torchsmith_api_testtasks:hang",
            "test": "torchsmith_api_testtasks:emit_steps",
        }
    )
    with TestClient(create_app(settings)) as first:
        done = first.post("/api/v1/train", json=TRAIN, headers=auth).json()
        first.post(f"/api/v1/jobs/{done['id']}/cancel", headers=auth)
        wait_done(first, done["id"])
        hung = first.post("/api/v1/train", json=TRAIN, headers=auth).json()
        events_url = f"/api/v1/jobs/{hung['id']}/events"
        while not first.get(events_url, params={"type": "event"}).json():
            time.sleep(0.02)  # running, and its first event is stored
    with TestClient(create_app(settings)) as second:
        jobs = {j["id"]: j for j in second.get("/api/v1/jobs").json()}
        assert jobs[done["id"]]["state"] == "cancelled"
        assert jobs[hung["id"]]["state"] == "failed"
        assert jobs[hung["id"]]["error"].startswith("interrupted: the server stopped")
        events = second.get(f"/api/v1/jobs/{hung['id']}/events", params={"type": "event"}).json()
        assert events and events[0]["record"]["metrics"] == {"loss": 1.0}


def test_the_dashboard_page_and_its_vendored_plotly(
    client: TestClient, make_settings: Callable[..., Settings]
) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert 'src="/static/vendor/plotly.min.js"' in page.text
    assert 'data-api="/api/v1"' in page.text
    assert '<label id="key-box" hidden>' in page.text, "no key box when reads are public"
    plotly = client.get("/static/vendor/plotly.min.js")
    assert plotly.status_code == 200 and "javascript" in plotly.headers["content-type"]
    assert len(plotly.content) > 1_000_000
    assert client.get("/static/dashboard.js").status_code == 200
    assert client.get("/static/../_keys.py").status_code == 404
    with TestClient(create_app(make_settings(read_access="key"))) as private:
        assert '<label id="key-box" >' in private.get("/").text


def _save_bench_runs(settings: Settings, runs: dict[str, float]) -> None:
    """One run per entry (uid -> the result's recorded rounds) in the server's bench store."""
    from torchsmith.bench import BenchStore, summarize
    from torchsmith.interfaces import BenchmarkResult, Environment

    samples = [0.01 + 0.0001 * i for i in range(20)]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with BenchStore(settings.data_dir / "bench.duckdb") as store:
        for uid, rounds in runs.items():
            result = BenchmarkResult(case="m", samples=samples, statistics=summarize(samples),
                                     environment=Environment(fingerprint="f"),
                                     extra={"rounds": rounds})  # fmt: skip
            store.save_run([result], uid=uid)


def test_an_ambiguous_bench_run_is_a_400_without_the_servers_path(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    _save_bench_runs(settings, {"ab111111": 3.0, "ab222222": 3.0})
    with TestClient(create_app(settings)) as client:
        response = client.get("/api/v1/bench/compare", params={"base": "ab", "head": "latest"})
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "'ab' is ambiguous" in detail and str(settings.data_dir) not in detail


def test_a_comparison_carries_the_warning_on_different_rounds(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    _save_bench_runs(settings, {"three": 3.0, "one": 1.0})
    with TestClient(create_app(settings)) as client:
        body = client.get("/api/v1/bench/compare").json()
    assert [note[:35] for note in body["notes"]] == ["base was timed in 3 round(s), head "]
