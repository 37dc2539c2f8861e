"""API keys: hashed at rest, checked in constant time, managed by the CLI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import pytest

from torchsmith.api import KeyStore
from torchsmith.api._cli import main
from torchsmith.interfaces import ConfigError


def test_a_created_key_verifies_and_only_its_hash_is_stored(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys.duckdb")
    key, secret = keys.create("ci-bot")
    assert secret.startswith(f"tsk_{key.key_id}.")
    assert keys.verify(secret) == key.__class__(key.key_id, "ci-bot", 0.0)
    raw_secret = secret.split(".", 1)[1]
    con = duckdb.connect(str(tmp_path / "keys.duckdb"), read_only=True)
    ((salt, digest),) = con.execute("SELECT salt, digest FROM api_keys").fetchall()
    con.close()
    assert len(bytes(salt)) == 16
    assert bytes(digest) != hashlib.sha256(raw_secret.encode()).digest(), "salted, not bare"
    assert raw_secret.encode() not in (tmp_path / "keys.duckdb").read_bytes()


def test_wrong_malformed_and_revoked_keys_fail(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys.duckdb")
    key, secret = keys.create("a")
    _, other_secret = keys.create("b")
    swapped = f"tsk_{key.key_id}.{other_secret.split('.', 1)[1]}"
    for bad in ("", "tsk_", "Bearer " + secret, secret + "x", swapped, secret.upper()):
        assert keys.verify(bad) is None, bad
    keys.revoke(key.key_id)
    assert keys.verify(secret) is None
    assert keys.verify(other_secret) is not None
    with pytest.raises(ConfigError, match="no active key"):
        keys.revoke(key.key_id)
    assert [(k.name, k.revoked_at is not None) for k in keys.list()] == [("a", True), ("b", False)]


def test_key_names_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key name"):
        KeyStore(tmp_path / "keys.duckdb").create("no spaces please")


def test_a_server_sees_keys_created_by_another_process(tmp_path: Path) -> None:
    server_side = KeyStore(tmp_path / "keys.duckdb")
    assert server_side.verify("tsk_000000000000." + "a" * 43) is None  # loads the empty file
    _, secret = KeyStore(tmp_path / "keys.duckdb").create("late")  # as the CLI would
    server_side._checked_at = 0.0  # skip the once-a-second wait instead of sleeping
    assert server_side.verify(secret) is not None


def test_the_cli_creates_lists_and_revokes_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "d")
    assert main(["keys", "create", "alice", "--data-dir", data]) == 0
    secret = capsys.readouterr().out.strip()
    assert KeyStore(tmp_path / "d" / "keys.duckdb").verify(secret) is not None
    assert main(["keys", "--data-dir", data, "list"]) == 0
    listing = capsys.readouterr().out
    key_id = secret[4:16]
    assert f"{key_id}  active" in listing and "alice" in listing
    assert secret.split(".")[1] not in listing
    assert main(["keys", "revoke", key_id, "--data-dir", data]) == 0
    assert "revoked" in capsys.readouterr().out
    assert KeyStore(tmp_path / "d" / "keys.duckdb").verify(secret) is None
