"""Generate -> test -> benchmark, for every model family, from Python and from the CLI.

Each family's preset is shrunk (its tiny overrides), generated with full validation
(which runs the generated test_model.py through the torchsmith.testing plugin and the
bench case once), and its benchmark is then timed into a bench DuckDB database.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from torchsmith.generator import generate, list_presets, resolve_spec


def _missing_api() -> str | None:
    needs = {
        "torchsmith.testing": ["ModelTest"],
        "torchsmith.bench": ["benchmark", "discover", "run", "BenchStore", "MeasureConfig"],
    }
    for module, names in needs.items():
        try:
            imported = importlib.import_module(module)
        except ImportError:
            return f"{module} is not installed"
        absent = [name for name in names if not hasattr(imported, name)]
        if absent:
            return f"{module} does not export {', '.join(absent)} yet"
    return None


pytestmark = pytest.mark.skipif(_missing_api() is not None, reason=str(_missing_api()))

# One preset per family.
FAMILY_PRESETS = {
    "bert": "bert-base-uncased",
    "gpt2": "gpt2",
    "llama": "smollm-135m",
    "t5": "t5-small",
    "vit": "vit-base-patch16-224",
    "clip": "clip-vit-base-patch32",
}


def tiny_overrides(preset: str, name: str) -> dict[str, Any]:
    flat: dict[str, Any] = {"name": name}
    for key, value in resolve_spec(preset).spec.tiny().items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def test_every_family_has_a_preset_here() -> None:
    assert set(FAMILY_PRESETS.values()) <= set(list_presets())
    assert {list_presets()[p] for p in FAMILY_PRESETS.values()} == set(FAMILY_PRESETS)


@pytest.mark.parametrize("family", list(FAMILY_PRESETS))
def test_generate_test_and_bench_from_python(family: str, tmp_path: Path) -> None:
    from torchsmith.bench import BenchStore, MeasureConfig, discover, run

    name = f"pipeline-{family}"
    out = tmp_path / name
    artifact = generate(
        FAMILY_PRESETS[family], out, overrides=tiny_overrides(FAMILY_PRESETS[family], name)
    )

    assert artifact.validated
    assert artifact.validation["tests"].startswith("passed"), artifact.validation
    assert artifact.validation["bench"].startswith("passed"), artifact.validation

    discover([out / "bench_model.py"])
    config = MeasureConfig(warmup_time=0.0, min_samples=3, max_samples=5, max_time=0.2)
    with BenchStore(tmp_path / "bench.duckdb") as store:
        # One round: this checks the pipeline; the CLI test below runs the default rounds.
        run_id = run([f"{name}-forward"], store=store, config=config, memory="off", rounds=1)
        results = store.results(run_id)
    assert sorted(r.params["batch_size"] for r in results) == [1, 8]
    assert all(r.case == f"{name}-forward" for r in results)
    assert all(r.statistics.median > 0 and len(r.samples) >= 3 for r in results)


def test_generate_test_and_bench_from_the_cli(tmp_path: Path) -> None:
    out, db = tmp_path / "cli-gpt2", tmp_path / "bench.duckdb"
    sets = [f"--set={key}={value}" for key, value in tiny_overrides("gpt2", "cli-gpt2").items()]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    commands = [
        ["-m", "torchsmith.interfaces._cli", "generate", "gpt2", *sets, "--out", str(out),
         "--checks", "parse,lint,import,forward,parameters"],
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(out),
         "--confcutdir", str(out), str(out / "test_model.py")],
        ["-m", "torchsmith.interfaces._cli", "bench", "run", str(out / "bench_model.py"),
         "--db", str(db), "--max-time", "0.2", "--min-samples", "3", "--max-samples", "5",
         "--memory", "off", "--no-entry-points", "--quiet"],
    ]  # fmt: skip
    for command in commands:
        result = subprocess.run(
            [sys.executable, *command], capture_output=True, text=True, env=env, check=False
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    from torchsmith.bench import BenchStore

    with BenchStore(db, read_only=True) as store:
        latest = store.runs(limit=1)[0]
        cases = {(r.case, r.params["batch_size"]) for r in store.results(latest.run_id)}
    assert cases == {("cli-gpt2-forward", 1), ("cli-gpt2-forward", 8)}
