"""The plugin's markers, --run-slow and fixtures, exercised through pytester."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

MARKED = """
import pytest

@pytest.mark.slow
def test_slow():
    pass

@pytest.mark.requires_cuda
def test_cuda():
    pass

@pytest.mark.requires_gpu_memory(4000)
def test_huge_gpu():
    pass

@pytest.mark.requires_bf16
def test_bf16():
    pass

@pytest.mark.perf
def test_perf():
    pass
"""


def test_markers_are_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    for name in ("requires_cuda:", "requires_gpu_memory(gb):", "requires_bf16:", "slow:", "perf:"):
        result.stdout.fnmatch_lines([f"@pytest.mark.{name}*"])


def test_unmet_requirements_skip_with_a_reason(pytester: pytest.Pytester) -> None:
    import torch

    pytester.makepyfile(test_marked=MARKED)
    result = pytester.runpytest("-rs", "--strict-markers", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*slow test: pass --run-slow*"])
    if not torch.cuda.is_available():
        result.stdout.fnmatch_lines(["*requires CUDA: torch * sees no device*"])
        result.stdout.fnmatch_lines(["*requires a GPU with 4000 GiB of memory:*"])
        result.assert_outcomes(passed=2, skipped=3)  # bf16 works on CPU; perf is not skipped


def test_run_slow_option_and_environment_run_slow_tests(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_marked=MARKED)
    pytester.runpytest("-k", "slow", "--run-slow").assert_outcomes(passed=1, deselected=4)
    monkeypatch.setenv("TORCHSMITH_RUN_SLOW", "1")
    pytester.runpytest("-k", "slow").assert_outcomes(passed=1, deselected=4)


def test_a_bad_gpu_memory_argument_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        "import pytest\n@pytest.mark.requires_gpu_memory('lots')\ndef test_x():\n    pass\n"
    )
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["*requires_gpu_memory needs a positive number of GiB*"])


def test_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import random
        import torch

        def test_device(device):
            assert isinstance(device, torch.device)

        def test_rng_is_the_same_in_every_test(rng):
            assert (random.random(), float(torch.rand(()))) == (0.8444218515250481,
                                                                  0.49625658988952637)
            assert rng.initial_seed() == 0

        def test_rng_again(rng):
            test_rng_is_the_same_in_every_test(rng)

        def test_tmp_checkpoint_dir(tmp_checkpoint_dir):
            assert tmp_checkpoint_dir.is_dir() and not any(tmp_checkpoint_dir.iterdir())

        def test_hardware(hardware):
            assert hardware.cpu_cores_logical >= 1 and "compile" in hardware.capabilities
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=5)


def test_seed_option_changes_the_rng(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_seed(rng):\n    assert rng.initial_seed() == 42\n")
    pytester.runpytest("--torchsmith-seed=42").assert_outcomes(passed=1)


def test_device_fixture_honours_the_override(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCHSMITH_DEVICE", "nonsense")
    pytester.makepyfile("def test_d(device):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*TORCHSMITH_DEVICE='nonsense' is not a torch device*"])


def test_gpu_memory_reason_names_the_largest_gpu(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    class Props:
        name, total_memory = "T4", 16 * 2**30

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: Props())
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.requires_gpu_memory(40)
        def test_big():
            pass

        @pytest.mark.requires_gpu_memory(8)
        def test_small():
            pass
        """
    )
    result = pytester.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["*requires a GPU with 40 GiB of memory; the largest here, T4, has 16.0 GiB*"]
    )
