import torchsmith.api as suite


def test_version_matches_distribution() -> None:
    from importlib.metadata import version

    assert suite.__version__ == version("torchsmith-api")


def test_built_against_installed_interfaces_major() -> None:
    from torchsmith.interfaces import INTERFACES_VERSION, parse_version

    assert suite.INTERFACES_MAJOR == parse_version(INTERFACES_VERSION)[0]


def test_public_api_is_exactly_all_and_every_name_resolves() -> None:
    assert suite.__all__ == [
        "INTERFACES_MAJOR",
        "__version__",
        "API_PREFIX",
        "create_app",
        "Settings",
        "JobManager",
        "JobContext",
        "JobNotFoundError",
        "EventHub",
        "ApiKey",
        "KeyStore",
    ]
    for name in suite.__all__:
        assert getattr(suite, name) is not None


def test_importing_the_package_loads_neither_fastapi_nor_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, torchsmith.api; "
        "print(sorted(m for m in ('fastapi', 'torch', 'duckdb') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
