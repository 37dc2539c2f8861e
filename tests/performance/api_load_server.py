"""Helpers of test_api_load.py: a server process with a CPU-busy job runner.

Run as ``python api_load_server.py DATA_DIR PORT``: serves the torchsmith app on
loopback with this directory on sys.path, so spawned job processes can import
``api_load_server:busy``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from torchsmith.interfaces import TrainingEvent


def busy(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Burn one core for ``seconds`` and emit a step event every 20 ms, like a small trainer."""
    end = time.monotonic() + float(params.get("seconds", 30.0))
    step = 0
    next_emit = 0.0
    while time.monotonic() < end:
        sum(i * i for i in range(5000))
        if time.monotonic() >= next_emit:
            ctx.emit(TrainingEvent(kind="step", step=step, metrics={"loss": 1.0 / (step + 1)}))
            step += 1
            next_emit = time.monotonic() + 0.02
    return {"steps": step}


def main() -> None:
    import uvicorn

    from torchsmith.api import Settings, create_app
    from torchsmith.api._cli import ws_protocol

    data_dir, port, runner = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    sys.path.insert(0, str(Path(__file__).parent))
    runners = {"train": "api_load_server:busy"} if runner == "busy" else {}
    app = create_app(Settings(data_dir=data_dir, runners=runners, submit_burst=100))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", ws=ws_protocol())


if __name__ == "__main__":
    main()
