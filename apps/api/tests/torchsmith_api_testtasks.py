"""Job runners for the tests, imported by name inside spawned job processes.

conftest.py puts this directory on sys.path; "spawn" children inherit sys.path.
"""

from __future__ import annotations

import os
import time
from typing import Any

from torchsmith.interfaces import (
    BenchmarkResult,
    ConfigError,
    Environment,
    GeneratedArtifact,
    GeneratedFile,
    Statistics,
    TrainingEvent,
)


def emit_steps(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """A loss curve 1/(step+1), ``steps`` events, ``delay`` seconds apart; with ``final=1``
    an evaluation and an end event that carry metrics, as the trainer's do.

    ``steps``, ``delay`` and ``final`` come from params or from ``key=value`` overrides.
    """
    params = {**params, **dict(o.split("=", 1) for o in params.get("overrides", []))}
    steps = int(params.get("steps", 5))
    delay = float(params.get("delay", 0.0))
    for step in range(steps):
        ctx.emit(TrainingEvent(kind="step", step=step, metrics={"loss": 1.0 / (step + 1)}))
        ctx.progress((step + 1) / steps)
        time.sleep(delay)
    end: dict[str, float] = {}
    if params.get("final") == "1":
        end = {"step": steps, "train_loss": 1.0 / steps, "val_loss": float("nan")}
        ctx.emit(TrainingEvent(kind="eval", step=steps, metrics={"val_loss": float("nan")}))
    ctx.emit(TrainingEvent(kind="end", step=steps, metrics=end))
    return {"steps": steps}


def hang(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
    ctx.emit(TrainingEvent(kind="step", step=0, metrics={"loss": 1.0}))
    time.sleep(600)
    return {}


def crash(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
    ctx.emit(TrainingEvent(kind="step", step=0, metrics={"loss": 1.0}))
    os._exit(3)


def bad_config(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
    print("checking the optimizer", flush=True)
    raise ConfigError("optimizer.lr must be > 0, got -1")


def busy(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Burn CPU for ``seconds`` while emitting a step event every 50 ms."""
    end = time.monotonic() + float(params.get("seconds", 5.0))
    step = 0
    next_emit = 0.0
    while time.monotonic() < end:
        sum(i * i for i in range(2000))
        if time.monotonic() >= next_emit:
            ctx.emit(TrainingEvent(kind="step", step=step, metrics={"loss": 1.0 / (step + 1)}))
            step += 1
            next_emit = time.monotonic() + 0.05
    return {"steps": step}


def write_model(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Writes two files like a generator would and returns their GeneratedArtifact."""
    files = {"model.py": "import torch\n", "nested/config.json": '{"width": 8}\n'}
    records = []
    for name, text in files.items():
        path = ctx.workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        import hashlib

        records.append(
            GeneratedFile(
                path=name, sha256=hashlib.sha256(text.encode()).hexdigest(), bytes=len(text)
            )
        )
    artifact = GeneratedArtifact(
        name=params.get("preset") or "spec",
        family="mlp",
        directory=str(ctx.workdir),
        files=records,
        spec=params,
        validated=True,
        validation={"forward": "passed"},
    )
    return artifact.model_dump(mode="json")


def fake_bench(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Results in the shape run_bench returns, with made-up but consistent samples."""
    env = Environment(fingerprint="test-env", git_commit=params.get("label"))
    scale = float(params.get("label") == "slow") + 1.0
    results = []
    for case in params.get("cases") or ["matmul"]:
        samples = [scale * (0.010 + 0.0001 * i) for i in range(20)]
        ordered = sorted(samples)
        stats = Statistics(
            n=20,
            median=(ordered[9] + ordered[10]) / 2,
            mean=sum(samples) / 20,
            stdev=0.0006 * scale,
            iqr=0.001 * scale,
            min=ordered[0],
            max=ordered[-1],
            ci_low=ordered[7],
            ci_high=ordered[12],
        )
        results.append(
            BenchmarkResult(
                case=case, params={"n": 64}, samples=samples, statistics=stats, environment=env
            )
        )
    return {
        "results": [r.model_dump(mode="json") for r in results],
        "environment": env.model_dump(mode="json"),
        "label": params.get("label"),
    }


def spawn_and_hang(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Starts a grandchild process (as a data loader would), records its pid, then hangs."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    (ctx.workdir / "child.pid").write_text(str(child.pid))
    time.sleep(600)
    return {}
