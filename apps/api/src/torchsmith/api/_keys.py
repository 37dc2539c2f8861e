"""API keys: created by the CLI, stored hashed, checked in constant time.

A key reads ``tsk_<id>.<secret>``. Only ``id``, a random per-key salt and
``HMAC-SHA256(salt, secret)`` are stored, in their own small DuckDB file, so the
``torchsmith serve keys`` command can add or revoke keys while the server runs:
each side opens the file only for the moment it needs it, and the server
reloads its in-memory copy when the file changes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from torchsmith.interfaces import ConfigError, TorchsmithError

_KEY_RE = re.compile(r"^tsk_([0-9a-f]{12})\.([A-Za-z0-9_-]{20,100})$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    salt BLOB NOT NULL,
    digest BLOB NOT NULL,
    created_at DOUBLE NOT NULL,
    revoked_at DOUBLE
)
"""


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    key_id: str
    name: str
    created_at: float
    revoked_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "name": self.name,
            "created_at": self.created_at,
            "revoked": self.revoked_at is not None,
        }


def _digest(salt: bytes, secret: str) -> bytes:
    return hmac.new(salt, secret.encode(), hashlib.sha256).digest()


class KeyStore:
    """The API keys of one data directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str, bytes, bytes, float | None]] = {}
        self._seen_mtime: float | None = None
        self._checked_at = 0.0

    # ------------------------------------------------------------ writing (CLI side)

    def _connect(self) -> duckdb.DuckDBPyConnection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(50):  # the other side holds the file only for milliseconds
            try:
                con = duckdb.connect(str(self.path))
                break
            except duckdb.IOException:
                if attempt == 49:
                    raise TorchsmithError(
                        f"the key store {self.path} stays locked by another process; "
                        "try again in a moment"
                    ) from None
                time.sleep(0.05)
        con.execute(_SCHEMA)
        return con

    def create(self, name: str) -> tuple[ApiKey, str]:
        """A new key named ``name``; returns it and the full secret key, shown only once."""
        if not _NAME_RE.match(name):
            raise ConfigError(
                f"key name {name!r} must be 1-64 characters of letters, digits and _.@-"
            )
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        salt = os.urandom(16)
        key = ApiKey(key_id=key_id, name=name, created_at=time.time())
        con = self._connect()
        try:
            con.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, NULL)",
                [key_id, name, salt, _digest(salt, secret), key.created_at],
            )
        finally:
            con.close()
        self._checked_at = 0.0
        return key, f"tsk_{key_id}.{secret}"

    def list(self) -> list[ApiKey]:
        con = self._connect()
        try:
            rows = con.execute(
                "SELECT key_id, name, created_at, revoked_at FROM api_keys ORDER BY created_at"
            ).fetchall()
        finally:
            con.close()
        return [ApiKey(*row) for row in rows]

    def revoke(self, key_id: str) -> ApiKey:
        con = self._connect()
        try:
            row = con.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL "
                "RETURNING key_id, name, created_at, revoked_at",
                [time.time(), key_id],
            ).fetchone()
        finally:
            con.close()
        if row is None:
            raise ConfigError(f"no active key with id {key_id!r}; see 'torchsmith serve keys list'")
        self._checked_at = 0.0
        return ApiKey(*row)

    # ------------------------------------------------------------ checking (server side)

    def _mtime(self) -> float | None:
        stamps = [
            p.stat().st_mtime
            for p in (self.path, self.path.with_name(self.path.name + ".wal"))
            if p.exists()
        ]
        return max(stamps) if stamps else None

    def _refresh(self) -> None:
        """Reload the keys when the file changed; looks at the file at most once a second."""
        now = time.monotonic()
        if now - self._checked_at < 1.0:
            return
        self._checked_at = now
        mtime = self._mtime()
        if mtime is None or mtime == self._seen_mtime:
            return
        con = self._connect()
        try:
            rows = con.execute(
                "SELECT key_id, name, salt, digest, revoked_at FROM api_keys"
            ).fetchall()
        finally:
            con.close()
        self._cache = {r[0]: (r[1], bytes(r[2]), bytes(r[3]), r[4]) for r in rows}
        self._seen_mtime = mtime

    def verify(self, presented: str) -> ApiKey | None:
        """The key ``presented`` belongs to, or None if it is malformed, unknown or revoked."""
        match = _KEY_RE.match(presented)
        if match is None:
            return None
        key_id, secret = match.groups()
        with self._lock:
            self._refresh()
            entry = self._cache.get(key_id)
        # Hash even for unknown ids so timing does not tell which ids exist.
        name, salt, digest, revoked_at = entry or ("", b"\0" * 16, b"", None)
        ok = hmac.compare_digest(_digest(salt, secret), digest)
        if entry is None or not ok or revoked_at is not None:
            return None
        return ApiKey(key_id=key_id, name=name, created_at=0.0, revoked_at=None)
