import json
import math

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import torchsmith.interfaces as ti


def _event(**overrides: object) -> dict[str, object]:
    return {"kind": "step", "step": 3, "metrics": {"loss": 0.5}, **overrides}


def test_records_carry_schema_version() -> None:
    event = ti.TrainingEvent(kind="eval", step=1)
    assert event.schema_version == "1.0"
    assert json.loads(event.write())["schema_version"] == "1.0"


def test_round_trip_through_json() -> None:
    event = ti.TrainingEvent.read(_event())
    again = ti.TrainingEvent.read(event.write())
    assert again == event


def test_older_minor_reads_fine() -> None:
    event = ti.TrainingEvent.read(_event(schema_version="1.0"))
    assert event.metrics == {"loss": 0.5}


def test_newer_minor_of_same_major_reads_and_ignores_unknown_fields() -> None:
    event = ti.TrainingEvent.read(_event(schema_version="1.7", added_in_1_7="x"))
    assert event.step == 3
    assert not hasattr(event, "added_in_1_7")


def test_newer_major_is_refused_naming_both_versions() -> None:
    with pytest.raises(ti.SchemaVersionError) as info:
        ti.TrainingEvent.read(json.dumps(_event(schema_version="2.0")))
    message = str(info.value)
    assert "TrainingEvent" in message and "2.0" in message and "1.0" in message


def test_malformed_schema_version_is_refused() -> None:
    with pytest.raises(ti.SchemaVersionError, match=r"MAJOR\.MINOR"):
        ti.TrainingEvent.read(_event(schema_version="latest"))


def test_event_kinds_are_closed() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="kind"):
        ti.TrainingEvent.read(_event(kind="bogus"))
    for kind in ("step", "eval", "checkpoint", "epoch_end", "end", "error"):
        assert ti.TrainingEvent(kind=kind, step=0).kind == kind


def test_benchmark_result_round_trip() -> None:
    stats = ti.Statistics(n=3, median=2.0, mean=2.0, stdev=1.0, iqr=1.0, min=1.0, max=3.0)
    env = ti.Environment(fingerprint="abc", torch_version="2.5")
    result = ti.BenchmarkResult(
        case="loss.clip",
        params={"batch": 32},
        samples=[1.0, 2.0, 3.0],
        statistics=stats,
        environment=env,
    )
    again = ti.BenchmarkResult.read(result.write())
    assert again == result
    assert again.statistics.median == 2.0


def test_job_status_done() -> None:
    job = ti.JobStatus(id="j1", kind="train")
    assert not job.done
    assert job.model_copy(update={"state": "failed"}).done


@given(
    metrics=st.dictionaries(st.text(min_size=1, max_size=8), st.floats()),
    step=st.integers(min_value=0, max_value=2**40),
)
def test_training_event_round_trips_any_metrics(metrics: dict[str, float], step: int) -> None:
    """NaN and infinities included: a diverged loss is a metric too."""
    event = ti.TrainingEvent(kind="step", step=step, metrics=metrics)
    back = ti.TrainingEvent.read(event.write())
    assert back.step == step and back.metrics.keys() == metrics.keys()
    for name, value in metrics.items():
        assert back.metrics[name] == value or (math.isnan(value) and math.isnan(back.metrics[name]))


@pytest.fixture(scope="module")
def event_schemas() -> list[dict]:
    pytest.importorskip("jsonschema")
    return [ti.TrainingEvent.model_json_schema(mode=m) for m in ("validation", "serialization")]


@settings(deadline=None)  # the first example imports jsonschema's format checkers
@given(metrics=st.dictionaries(st.text(min_size=1, max_size=8), st.floats()))
def test_a_written_event_is_valid_by_its_own_json_schema(
    event_schemas: list[dict], metrics: dict[str, float]
) -> None:
    """What a client generated from the schema (the API's OpenAPI document) checks."""
    import jsonschema

    written = json.loads(ti.TrainingEvent(kind="step", step=1, metrics=metrics).write())
    for schema in event_schemas:
        jsonschema.validate(written, schema)


def test_a_nan_metric_is_written_as_json_a_1_3_reader_takes() -> None:
    line = ti.TrainingEvent(kind="step", step=3, metrics={"loss": float("nan")}).write()
    assert json.loads(line)["metrics"] == {"loss": "NaN"}  # valid JSON, not a bare NaN or null

    class Reader13(pydantic.BaseModel):  # how a reader without the setting parses it
        metrics: dict[str, float]

    assert math.isnan(Reader13.model_validate_json(line).metrics["loss"])


def _benchmark_result_1_0() -> dict[str, object]:
    """A BenchmarkResult as interfaces 1.2 wrote it: schema 1.0, no left_out_samples."""
    stats = {"n": 2, "median": 1.5, "mean": 1.5, "stdev": 0.5, "iqr": 0.5, "min": 1.0, "max": 2.0}
    return {
        "schema_version": "1.0",
        "case": "old.case",
        "samples": [1.0, 2.0],
        "statistics": stats,
        "environment": {"fingerprint": "fp"},
    }


def test_benchmark_result_1_0_reads_with_no_left_out_samples() -> None:
    result = ti.BenchmarkResult.read(json.dumps(_benchmark_result_1_0()))
    assert result.schema_version == "1.0"
    assert result.samples == [1.0, 2.0] and result.left_out_samples == []


def test_benchmark_result_1_1_keeps_left_out_samples_apart_from_samples() -> None:
    unversioned = {k: v for k, v in _benchmark_result_1_0().items() if k != "schema_version"}
    assert ti.BenchmarkResult.read(unversioned).schema_version == "1.1"  # this writer's
    data = {**_benchmark_result_1_0(), "schema_version": "1.1", "left_out_samples": [9.0, 8.0]}
    result = ti.BenchmarkResult.read(json.dumps(data))
    written = json.loads(result.write())
    assert written["schema_version"] == "1.1"
    assert written["left_out_samples"] == [9.0, 8.0] and written["samples"] == [1.0, 2.0]
    assert ti.BenchmarkResult.read(result.write()) == result
    assert ti.TrainingEvent(kind="end", step=0).schema_version == "1.0"  # other records stay
