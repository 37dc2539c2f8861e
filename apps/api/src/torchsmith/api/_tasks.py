"""The built-in job runners; each runs inside the job's own process (see _worker).

A runner takes the job's parameters and a JobContext (its work directory, and
``emit``/``progress`` to report) and returns a JSON-able dict, the job's result.
The suites are imported here, in the child, so the server never loads torch to
run a job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchsmith.interfaces import ConfigError, GeneratedArtifact, RegistryError

from ._suites import suite
from ._worker import JobContext


def checked_train_config(recipe: str, overrides: list[str]) -> Any:
    """The recipe's config with ``overrides``, refused (ConfigError, a 422) where a request
    would run code or read files on the server rather than tune a shipped recipe: an
    ``import`` model, data or task and ``eval.metrics`` call what their import paths name, and
    ``data.paths`` reads the server's files (whose text the sampled evaluations would show).
    ``out_dir`` needs no check: the job's own directory replaces it. ``recipe`` must be a
    shipped recipe's name (``load_config`` would read a ``.toml`` of that name from the
    working directory)."""
    trainer = suite("trainer", "load_config", "list_recipes")
    if recipe not in trainer.list_recipes():
        raise RegistryError(
            f"unknown recipe {recipe!r}; recipes: {', '.join(trainer.list_recipes())}"
        )
    config, _ = trainer.load_config(recipe, overrides)
    problems = []
    for section in ("model", "data", "task"):  # every section with an `import` kind
        if getattr(config, section).kind == "import":
            problems.append(
                f"{section}.kind: 'import' runs code named by path; train a built-in kind"
            )
    if config.eval.metrics:
        problems.append("eval.metrics: each runs code named by path; use the built-in metrics")
    if getattr(config.data, "paths", None):
        problems.append("data.paths: the server's files are not training data for a request")
    if problems:
        raise ConfigError("not allowed through the API: " + "; ".join(problems))
    return config


def run_train(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """trainer.train(the checked recipe config, out_dir=..., sinks=[ctx]); ctx relays events."""
    trainer = suite("trainer", "train")
    config = checked_train_config(params["recipe"], list(params.get("overrides", [])))
    outcome = trainer.train(config, out_dir=ctx.workdir, sinks=[ctx])
    return _jsonable(outcome)


def run_generate(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """generator.generate(spec or preset, out_dir) -> GeneratedArtifact."""
    generator = suite("generator", "generate")
    spec: Any = params.get("spec") or params["preset"]
    if isinstance(spec, str) and spec not in generator.list_presets():
        # generate() also reads a spec file by path: a request names presets only.
        raise ConfigError(
            f"preset: unknown preset {spec!r}; presets: {', '.join(generator.list_presets())}"
        )
    artifact = generator.generate(
        spec,
        ctx.workdir,
        overrides=list(params.get("overrides", [])),
        backend=params.get("backend", "cpu"),
        force=True,
        validate=bool(params.get("check", True)),
    )
    return GeneratedArtifact.model_validate(artifact.model_dump()).model_dump(mode="json")


def run_test(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """pytest with the torchsmith report over a generated or a registered model; its SuiteReport."""
    if params.get("model"):
        from ._registered import write_test_file

        # The test file resolves the name through the installed packages' entry points here,
        # in the job's process: the server never imports a registered model's code.
        directory = ctx.workdir
        tests = [str(write_test_file(directory, str(params["model"])))]
    else:
        artifact = GeneratedArtifact.read(params["artifact"])
        directory = Path(artifact.directory)
        tests = sorted(str(p) for p in directory.rglob("test_*.py"))
        if not tests:
            raise ConfigError(
                f"generated model {artifact.name!r} has no ModelTest file (test_*.py) "
                f"in {directory}"
            )
    return _pytest_report(tests, directory, ctx)


def _pytest_report(tests: list[str], directory: Path, ctx: JobContext) -> dict[str, Any]:
    """pytest.main on ``tests`` in this process; the report it wrote, with a summary."""
    import pytest

    testing = suite("testing", "ModelTest", "read_report")
    report_path = ctx.workdir / "report.json"
    code = pytest.main(
        [
            *tests,
            "-q",
            f"--torchsmith-report={report_path}",
            f"--rootdir={directory}",
            f"--confcutdir={directory}",
            "-p",
            "no:cacheprovider",
        ]
    )
    if int(code) not in (0, 1) or not report_path.is_file():  # 0, 1: the checks ran
        raise ConfigError(
            f"pytest could not run the checks (exit code {int(code)}); the end of its output:\n"
            + _log_tail(ctx.workdir / "job.log")
        )
    report = testing.read_report(report_path)
    return {
        "exit_code": int(code),
        "counts": report.counts(),
        "passed": bool(report.models) and all(m.passed for m in report.models),
        "report": report.model_dump(mode="json"),
        "markdown": report.markdown(),
    }


def _log_tail(path: Path, lines: int = 15) -> str:
    import sys

    sys.stdout.flush()
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no job log)"
    return "\n".join(text.strip().splitlines()[-lines:])


def run_bench(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Measure cases here; the server stores the results as one run (see _routes_bench)."""
    bench = suite("bench", "measure_cases", "capture_environment", "load_entry_points", "REGISTRY")
    bench.load_entry_points()  # cases that installed packages register
    patterns = list(params.get("cases") or [])
    cases = bench.REGISTRY.select(patterns)
    if not cases:
        known = ", ".join(bench.REGISTRY.names()) or "none are registered"
        raise ConfigError(f"no benchmark case matches {patterns or 'anything'}; cases: {known}")
    environment = bench.capture_environment()

    def on_progress(label: str, done: int, total: int, samples: int) -> None:
        ctx.progress(done / max(total, 1))

    results = bench.measure_cases(cases, environment=environment, on_progress=on_progress)
    return {
        "results": [r.model_dump(mode="json") for r in results],
        "environment": environment.model_dump(mode="json"),
        "label": params.get("label"),
    }


def _jsonable(value: Any) -> dict[str, Any]:
    """A suite's return value as a JSON-able dict (pydantic models, dicts, dataclasses)."""
    import dataclasses

    from fastapi.encoders import jsonable_encoder

    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    encoded = jsonable_encoder(value)
    return encoded if isinstance(encoded, dict) else {"value": encoded}
