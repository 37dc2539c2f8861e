import torchsmith.testing as suite


def test_version_matches_distribution() -> None:
    from importlib.metadata import version

    assert suite.__version__ == version("torchsmith-testing")


def test_built_against_installed_interfaces_major() -> None:
    from torchsmith.interfaces import INTERFACES_VERSION, parse_version

    assert suite.INTERFACES_MAJOR == parse_version(INTERFACES_VERSION)[0]


def test_public_names_are_exactly_these_and_all_resolve() -> None:
    assert set(suite.__all__) == {
        "INTERFACES_MAJOR",
        "__version__",
        "CAPABILITIES",
        "DEVICE_ENV",
        "best_device",
        "detect_hardware",
        "CHECK_METHODS",
        "LOSS_CHECK_METHODS",
        "ModelTest",
        "LossTest",
        "add_constant",
        "permute_batch",
        "scale_input",
        "main_tensor",
        "DTYPE_TOLERANCES",
        "assert_close_tensors",
        "assert_finite",
        "count_parameters",
        "tolerance_for",
        "seed_everything",
        "seeded",
        "CheckResult",
        "ModelReport",
        "SuiteReport",
        "read_report",
        "run_model_tests",
    }
    for name in suite.__all__:
        assert getattr(suite, name) is not None


def test_importing_the_plugin_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, torchsmith.testing.plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_numpy_is_a_dependency_not_an_extra() -> None:
    """safetensors' save_model needs numpy, and torch does not pull it in: as an extra, a
    plain install failed the safetensors check on a correct model."""
    from importlib.metadata import requires

    plain = [r for r in requires("torchsmith-testing") or [] if "extra ==" not in r]
    assert any(r.startswith("numpy") for r in plain), plain
