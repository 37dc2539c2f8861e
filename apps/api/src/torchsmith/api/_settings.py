"""The server's settings: one validated object handed to ``create_app``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ReadAccess = Literal["public", "key"]


class Settings(BaseModel):
    """Everything the app needs to know; defaults are safe for a laptop on loopback."""

    model_config = ConfigDict(frozen=True)

    data_dir: Path = Field(
        default=Path(".torchsmith"), description="Holds the DuckDB stores and each job's files."
    )
    read_access: ReadAccess = Field(
        default="public",
        description="'public': GET routes, the dashboard and the WebSocket need no key; "
        "'key': they need one too. State-changing routes always need a key.",
    )
    cors_origins: tuple[str, ...] = Field(
        default=(),
        description="Origins allowed cross-site (REST and the WebSocket); empty (the default) "
        "turns CORS off, and a job's WebSocket then takes pages of the server's own origin only.",
    )
    allowed_hosts: tuple[str, ...] = Field(
        default=(),
        description="Host header names served (no port); empty: any. 'torchsmith serve' on a "
        "loopback address serves localhost, 127.0.0.1 and ::1 only, so that a page of another "
        "site cannot reach it through a name that site points at 127.0.0.1 (DNS rebinding).",
    )
    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="Largest request body.")
    workers: int = Field(default=2, ge=1, le=64, description="Jobs running at once (processes).")
    max_queued: int = Field(
        default=100, ge=1, description="Jobs waiting to start, at most; past it a submit is a 429."
    )
    job_timeout_s: float = Field(default=3600.0, gt=0, description="Default wall-clock limit.")
    max_job_timeout_s: float = Field(default=24 * 3600.0, gt=0)
    submit_burst: int = Field(default=10, ge=1, description="Job submissions a key may burst.")
    submit_per_minute: float = Field(default=30.0, gt=0, description="Sustained submit rate.")
    ws_queue_size: int = Field(default=256, ge=1, description="Messages buffered per client.")
    runners: dict[str, str] = Field(
        default_factory=dict,
        description="Job kind -> 'module:function' run in the worker process; overrides the "
        "built-in runners (used by tests and by deployments that add their own jobs).",
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def store_path(self) -> Path:
        return self.data_dir / "torchsmith.duckdb"

    @property
    def keys_path(self) -> Path:
        return self.data_dir / "keys.duckdb"
