"""Environment capture: git state, fingerprint rules."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from torchsmith.bench import capture_environment
from torchsmith.bench._environment import FINGERPRINT_VARIABLE, fingerprint


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_git_commit_and_branch_are_captured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(FINGERPRINT_VARIABLE, raising=False)
    _git(tmp_path, "init", "-q", "-b", "feature")
    (tmp_path / "f").write_text("x")
    _git(tmp_path, "add", "f")
    _git(tmp_path, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "-m", "m")
    env = capture_environment(tmp_path)
    assert env.git_commit == _git(tmp_path, "rev-parse", "HEAD")
    assert env.git_branch == "feature"
    assert env.torch_version and env.num_threads and env.num_threads >= 1
    # The commit is not part of the fingerprint: runs of two commits stay comparable.
    elsewhere = capture_environment(tmp_path.parent)
    assert elsewhere.fingerprint == env.fingerprint


def test_fingerprint_follows_what_changes_timings(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"cpu": "x", "threads": 4}
    assert fingerprint(base) == fingerprint(dict(base))
    assert fingerprint(base) != fingerprint({**base, "threads": 8})
    monkeypatch.setenv(FINGERPRINT_VARIABLE, "ci-pool-a")
    assert capture_environment().fingerprint == "ci-pool-a"
