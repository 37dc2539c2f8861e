"""A worker process of one round: import the cases, time them, write the results.

Reads a JSON request on stdin (see ``_rounds._request``), reports progress on stderr as
lines starting with ``PROGRESS_PREFIX`` and writes the results as JSON to ``request["out"]``.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

from torchsmith.interfaces import Environment

from ._registry import load_file
from ._rounds import PROGRESS_PREFIX
from ._runner import measure_cases
from ._timer import MeasureConfig


def _emit(label: str, done: int, total: int, samples: int) -> None:
    print(PROGRESS_PREFIX + json.dumps([label, done, total, samples]), file=sys.stderr, flush=True)


def serve(request: dict[str, Any]) -> None:
    for source in request["sources"]:
        if source.endswith(".py") and Path(source).is_file():
            load_file(Path(source))
        else:
            importlib.import_module(source)
    results = measure_cases(
        request["names"],
        config=MeasureConfig(**request["config"]),
        memory=request["memory"],
        environment=Environment.read(request["environment"]),
        on_progress=_emit,
        rounds=1,  # this is one round
    )
    Path(request["out"]).write_text(json.dumps([r.model_dump(mode="json") for r in results]))


if __name__ == "__main__":
    serve(json.loads(sys.stdin.read()))
