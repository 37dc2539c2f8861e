"""Sessions for the torchsmith workspace; uv creates every environment.

nox                      the CI gate: lint, each member alone, integration, build
nox -s perf              benchmarks in tests/performance (a CI job of its own)
nox -s tests-losses      one member's tests, with only that member installed from its wheel
nox -s integration       tests/integration with every member installed
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import tomllib
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.reuse_venv = "yes"  # lint/integration/perf re-sync; tests-* always start fresh
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).parent
MEMBERS = {
    "interfaces": ROOT / "packages" / "interfaces",
    "trainer": ROOT / "packages" / "trainer",
    "losses": ROOT / "packages" / "losses",
    "generator": ROOT / "packages" / "generator",
    "bench": ROOT / "packages" / "bench",
    "testing": ROOT / "packages" / "testing",
    "api": ROOT / "apps" / "api",
}
PYTHON = "3.11"
nox.options.sessions = ["lint", *(f"tests-{m}" for m in MEMBERS), "integration", "build"]


def _pyproject(member: str) -> dict:
    with open(MEMBERS[member] / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


_dist: list[Path] = []


def _wheels(session: nox.Session) -> dict[str, Path]:
    """Build every member's wheel once per nox run; distribution name -> wheel path.

    Each nox process builds into its own folder, so two runs never mix their wheels.
    """
    if not _dist:
        (ROOT / ".nox").mkdir(exist_ok=True)
        _dist.append(Path(tempfile.mkdtemp(prefix="dist-", dir=ROOT / ".nox")))
        atexit.register(shutil.rmtree, _dist[0], True)
        session.run("uv", "build", "--all-packages", "--wheel", "-o", str(_dist[0]), external=True)
    return {w.name.split("-")[0].replace("_", "-"): w for w in sorted(_dist[0].glob("*.whl"))}


# Tests start many Pythons that import torch (CLI runs, DDP ranks, API workers). Where
# PYTHONDONTWRITEBYTECODE is set, as on CI, each one compiled every module it imported
# again; with it cleared the first writes the bytecode into the session's venv and the rest
# read it (trainer: 80 s of tests became 57 s; integration: 320 s became 153 s, with none of
# the 44 s that compiling all of the venv at install time took).
_BYTECODE = {"PYTHONDONTWRITEBYTECODE": ""}


def _sync_workspace(session: nox.Session, *flags: str) -> None:
    """Install the whole workspace, as locked, into the session's venv."""
    session.run_install(
        "uv",
        "sync",
        "--locked",
        "--all-packages",
        "--all-groups",
        "--inexact",
        *flags,
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check and mypy over every member's source."""
    _sync_workspace(session)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    sources = [str(path / "src") for path in MEMBERS.values()]
    session.run("mypy", *sources)


def _member_tests(session: nox.Session, member: str) -> None:
    """One member's tests, with only that member (and what it declares) installed from wheels.

    Siblings it declares (torchsmith-interfaces, extras) resolve from the wheels built here
    through --find-links; nothing else of the workspace is installed.
    """
    wheels = _wheels(session)
    config = _pyproject(member)
    name = config["project"]["name"]
    extras = ",".join(config.get("tool", {}).get("torchsmith", {}).get("test-extras", []))
    target = f"{name}[{extras}] @ {wheels[name].as_uri()}" if extras else str(wheels[name])
    test_deps = nox.project.dependency_groups(config, "test")
    session.install(target, *test_deps, "--find-links", str(_dist[0]))
    session.run("pytest", str(MEMBERS[member] / "tests"), *session.posargs, env=_BYTECODE)


for _member in MEMBERS:
    nox.session(
        python=PYTHON,
        name=f"tests-{_member}",
        reuse_venv=False,
    )(lambda session, member=_member: _member_tests(session, member))


@nox.session(python=PYTHON)
def integration(session: nox.Session) -> None:
    """Cross-package tests with every member installed."""
    _sync_workspace(session)
    session.run("pytest", "tests/integration", *session.posargs, env=_BYTECODE)


@nox.session(python=PYTHON)
def perf(session: nox.Session) -> None:
    """tests/performance: ratios against references; GPU cases skip without CUDA."""
    _sync_workspace(session)
    # PYTHONDONTWRITEBYTECODE stays as it is: the peak-memory probes start a Python each,
    # and the first one to run would otherwise also pay for compiling what it imports.
    session.run("pytest", "tests/performance", *session.posargs)


@nox.session(python=PYTHON)
def build(session: nox.Session) -> None:
    """Every member's sdist and wheel; metadata checked; each wheel installed alone, imported."""
    out = ROOT / ".nox" / "_build"
    shutil.rmtree(out, ignore_errors=True)
    session.run("uv", "build", "--all-packages", "-o", str(out), external=True)
    session.install("twine")
    dists = sorted([*out.glob("*.whl"), *out.glob("*.tar.gz")])
    session.run("twine", "check", "--strict", *map(str, dists))
    wheels = {w.name.split("-")[0].replace("_", "-"): w for w in out.glob("*.whl")}
    for member in MEMBERS:
        name = _pyproject(member)["project"]["name"]
        venv = out / f"venv-{member}"
        session.run("uv", "venv", "-q", "-p", PYTHON, str(venv), external=True)
        python = str(venv / "bin" / "python")
        session.run(
            "uv",
            "pip",
            "install",
            "-q",
            "-p",
            python,
            str(wheels[name]),
            "--find-links",
            str(out),
            external=True,
        )
        module = "torchsmith." + member
        # -W error: an import that warns (torch without numpy does) fails the build.
        code = f"import {module}; print({module!r}, 'imports')"
        session.run(python, "-W", "error", "-c", code, external=True)
