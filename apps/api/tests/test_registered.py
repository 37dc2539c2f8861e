"""Registered models: listed from entry points, run by name only, never by a path.

The fixture installs nothing: it writes a tiny distribution (a module and its
``.dist-info`` with entry points) into a temporary folder on sys.path, which the
spawned job processes inherit (and PYTHONPATH, for the processes pytest starts).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conftest import TEST_RUNNERS, wait_done
from torchsmith.api import KeyStore, Settings, create_app
from torchsmith.api import _registered as registered

MODULE = "torchsmith_api_tiny_models"
MODEL_CODE = """
import torch
from torch import nn

from torchsmith.testing import ModelTest


class TestTinyMLP(ModelTest):
    expected_num_parameters = 4 * 8 + 8 + 8 * 2 + 2
    skip_checks = {"compile": "not needed for the API test", "bf16": "not needed here"}

    def make_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))

    def make_inputs(self, batch_size: int) -> dict[str, torch.Tensor]:
        return {"input": torch.randn(batch_size, 4)}


class TestTinyLinear(TestTinyMLP):
    expected_num_parameters = 4 * 2 + 2

    def make_model(self) -> nn.Module:
        return nn.Linear(4, 2)


class Helper:
    pass
"""
ENTRY_POINTS = f"""
[torchsmith.models]
tiny-mlp = {MODULE}:TestTinyMLP
tiny-suite = {MODULE}
not-a-test = {MODULE}:Helper
broken = torchsmith_api_no_such_module:TestGone
"""


@pytest.fixture
def tiny_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A test-only distribution 'tiny-models' 0.3 registering four models."""
    root = tmp_path / "site"
    info = root / "tiny_models-0.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-models\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(ENTRY_POINTS))
    (root / f"{MODULE}.py").write_text(MODEL_CODE)
    monkeypatch.syspath_prepend(str(root))  # spawn children start with the parent's sys.path
    monkeypatch.setenv("PYTHONPATH", str(root))
    return root


@pytest.fixture
def real_test_client(
    tiny_dist: Path, make_settings: Callable[..., Settings]
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The app with the real model-test runner (the other kinds keep the test runners)."""
    runners = {kind: ref for kind, ref in TEST_RUNNERS.items() if kind != "test"}
    settings = make_settings(runners=runners, workers=1)
    _, key = KeyStore(settings.keys_path).create("registered")
    with TestClient(create_app(settings)) as client:
        yield client, {"Authorization": f"Bearer {key}"}


def test_the_list_shows_registered_models_and_their_distribution(
    client: TestClient, tiny_dist: Path
) -> None:
    listed = {m["name"]: m for m in client.get("/api/v1/tests/models").json()}
    assert listed["tiny-mlp"] == {
        "name": "tiny-mlp",
        "target": f"{MODULE}:TestTinyMLP",
        "distribution": "tiny-models",
        "version": "0.3",
    }
    assert listed["tiny-suite"]["target"] == MODULE
    assert list(listed) == sorted(listed)


def test_a_registered_model_runs_and_reports_passed_checks(real_test_client) -> None:
    client, auth = real_test_client
    accepted = client.post("/api/v1/tests", json={"model": "tiny-mlp"}, headers=auth)
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()
    assert job["kind"] == "test"
    done = wait_done(client, job["id"], timeout=120)
    assert done["state"] == "succeeded", done["error"]
    body = client.get(f"/api/v1/tests/{job['id']}/report").json()
    result = body["report"]
    assert result["passed"] is True and result["exit_code"] == 0
    (model,) = result["report"]["models"]
    assert model["model"] == "TestTinyMLP" and model["kind"] == "model"
    outcomes = {c["check"]: c["outcome"] for c in model["checks"]}
    for check in ("forward", "batching", "gradients", "safetensors", "parameter_count"):
        assert outcomes[check] == "passed", model["checks"]
    assert outcomes["compile"] == "skipped"
    assert result["counts"]["passed"] >= 8 and result["counts"]["failed"] == 0
    assert "TestTinyMLP" in result["markdown"]
    files = {f["path"] for f in client.get(f"/api/v1/jobs/{job['id']}/files").json()}
    assert {"report.json", "report.md", "test_registered_model.py"} <= files


def test_a_registered_model_that_cannot_load_fails_its_job_with_the_reason(
    real_test_client,
) -> None:
    client, auth = real_test_client
    job = client.post("/api/v1/tests", json={"model": "broken"}, headers=auth).json()
    done = wait_done(client, job["id"], timeout=120)
    assert done["state"] == "failed"
    assert "pytest could not run the checks (exit code 2)" in done["error"]
    assert "No module named 'torchsmith_api_no_such_module'" in done["error"]


def test_an_unknown_name_is_a_404_listing_the_registered_ones(
    client: TestClient, auth: dict[str, str], tiny_dist: Path
) -> None:
    response = client.post("/api/v1/tests", json={"model": "no-such-model"}, headers=auth)
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert "no-such-model" in detail and "tiny-mlp" in detail and "tiny-suite" in detail
    assert client.get("/api/v1/jobs", params={"kind": "test"}).json() == []


def test_running_a_registered_model_needs_a_key(client: TestClient, tiny_dist: Path) -> None:
    refused = client.post("/api/v1/tests", json={"model": "tiny-mlp"})
    assert refused.status_code in (401, 403)
    wrong = client.post(
        "/api/v1/tests", json={"model": "tiny-mlp"}, headers={"Authorization": "Bearer tsk_x"}
    )
    assert wrong.status_code in (401, 403)
    assert client.get("/api/v1/jobs", params={"kind": "test"}).json() == []


@pytest.mark.parametrize(
    "name",
    [
        f"{MODULE}:TestTinyMLP",
        MODULE + ".TestTinyMLP",
        "os.system",
        "../tiny-mlp",
        "/tmp/evil.py",
        "tiny-mlp/../x",
        "-rf",
        "",
    ],
)
def test_path_like_or_dotted_names_are_refused(
    client: TestClient, auth: dict[str, str], tiny_dist: Path, name: str
) -> None:
    response = client.post("/api/v1/tests", json={"model": name}, headers=auth)
    assert response.status_code == 422, response.text
    assert "model" in response.json()["message"]
    assert client.get("/api/v1/jobs", params={"kind": "test"}).json() == []


def test_exactly_one_of_generate_job_and_model(client: TestClient, auth: dict[str, str]) -> None:
    both = {"model": "tiny-mlp", "generate_job": "0" * 16}
    for body in (both, {}):
        response = client.post("/api/v1/tests", json=body, headers=auth)
        assert response.status_code == 422
        assert "exactly one of 'generate_job' and 'model'" in response.json()["detail"]


def test_the_lookup_skips_bad_names_and_keeps_the_first_of_a_duplicate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entries = [
        metadata.EntryPoint("b-model", "first_pkg:TestB", registered.GROUP),
        metadata.EntryPoint("a.dotted", "pkg:TestA", registered.GROUP),
        metadata.EntryPoint("b-model", "second_pkg:TestB", registered.GROUP),
        metadata.EntryPoint("a-model", "pkg:TestA", registered.GROUP),
    ]
    monkeypatch.setattr(registered, "model_entry_points", lambda: entries)
    found = registered.registered_models()
    assert list(found) == ["a-model", "b-model"]
    assert found["b-model"].target == "first_pkg:TestB"
    with pytest.raises(registered.UnknownModelError, match="registered models: a-model, b-model"):
        registered.find_model("a.dotted")


def test_entry_points_load_as_test_classes_in_the_job_process(tiny_dist: Path) -> None:
    single = registered.registered_test_classes("tiny-mlp")
    assert list(single) == ["TestTinyMLP"]
    suite = registered.registered_test_classes("tiny-suite")
    assert sorted(suite) == ["TestTinyLinear", "TestTinyMLP"]  # not Helper, not ModelTest
    from torchsmith.interfaces import ConfigError

    with pytest.raises(ConfigError, match="neither a ModelTest subclass"):
        registered.registered_test_classes("not-a-test")


def test_the_test_file_embeds_only_a_checked_name(tmp_path: Path) -> None:
    from torchsmith.interfaces import ConfigError

    path = registered.write_test_file(tmp_path, "tiny-mlp")
    assert 'registered_test_classes("tiny-mlp")' in path.read_text()
    with pytest.raises(ConfigError, match="does not match"):
        registered.write_test_file(tmp_path, 'x")\nimport os; os.system("id")  #')
