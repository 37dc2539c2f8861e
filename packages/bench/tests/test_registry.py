"""The @benchmark decorator, the registry and discovery of benchmark files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from torchsmith.bench import REGISTRY, Registry, benchmark, case_key, discover
from torchsmith.interfaces import BenchmarkCase, ConfigError, RegistryError


def test_decorator_registers_a_case_with_its_parameters(registry: Registry) -> None:
    @benchmark("add", params={"n": [1, 2], "dtype": ["f32"]}, registry=registry)
    def add(n: int, dtype: str):
        return lambda: n + 1

    case = registry.get("add")
    assert isinstance(case, BenchmarkCase)
    assert case.variants() == [{"n": 1, "dtype": "f32"}, {"n": 2, "dtype": "f32"}]
    assert case.setup(n=2, dtype="f32")() == 3
    assert add(n=1, dtype="f32")() == 2  # the function itself stays usable


def test_case_without_parameters_has_one_variant(registry: Registry) -> None:
    benchmark("plain", registry=registry)(lambda: lambda: None)
    assert registry.get("plain").variants() == [{}]


def test_unknown_name_suggests_close_ones(registry: Registry) -> None:
    benchmark("matmul", registry=registry)(lambda: lambda: None)
    with pytest.raises(RegistryError, match=r"unknown benchmark 'matmull'.*did you mean matmul"):
        registry.get("matmull")


def test_a_name_taken_by_another_function_is_refused(registry: Registry) -> None:
    benchmark("x", registry=registry)(lambda: lambda: None)

    def other():
        return lambda: None

    with pytest.raises(RegistryError, match="already taken"):
        benchmark("x", registry=registry)(other)


def test_setup_must_return_a_callable(registry: Registry) -> None:
    benchmark("bad", registry=registry)(lambda: 42)
    with pytest.raises(ConfigError, match="must return the callable"):
        registry.get("bad").setup()


def test_empty_parameter_values_are_refused() -> None:
    with pytest.raises(ConfigError, match="'n' has no values"):
        benchmark("e", params={"n": []})


def test_select_by_glob_or_substring(registry: Registry) -> None:
    for name in ("loss.mse", "loss.ce", "train.step"):
        benchmark(name, registry=registry)(lambda: lambda: None)
    assert [c.name for c in registry.select(["loss.*"])] == ["loss.ce", "loss.mse"]
    assert [c.name for c in registry.select(["step"])] == ["train.step"]
    assert len(registry.select()) == 3


def test_a_pattern_matching_nothing_is_an_error_even_beside_one_that_matches(
    registry: Registry,
) -> None:
    for name in ("x.sum", "x.mean"):
        benchmark(name, registry=registry)(lambda: lambda: None)
    assert [c.name for c in registry.select(["x.sum", "x.*"])] == ["x.mean", "x.sum"]
    with pytest.raises(RegistryError, match=r"no benchmark matches 'x.summ'.*did you mean x.sum"):
        registry.select(["x.sum", "x.summ"])


def test_items_per_call_defaults_to_batch_size(registry: Registry) -> None:
    benchmark("b", params={"batch_size": [8]}, registry=registry)(lambda batch_size: print)
    benchmark("c", items=128, registry=registry)(lambda: print)
    assert registry.get("b").items_per_call({"batch_size": 8}) == 8.0
    assert registry.get("c").items_per_call({}) == 128.0


def test_case_key_is_stable_and_order_free() -> None:
    assert case_key("m", {"b": 2, "a": "x"}) == case_key("m", {"a": "x", "b": 2})
    assert case_key("m", {}) == "m"


@pytest.mark.usefixtures("clean_registry")
def test_discover_imports_bench_files_in_a_directory(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "bench_found.py").write_text(
        "from torchsmith.bench import benchmark\n"
        "@benchmark('discovered.case', params={'n': [1]})\n"
        "def case(n):\n    return lambda: n\n"
    )
    (tmp_path / "helper.py").write_text("raise RuntimeError('not a bench file')\n")
    files = discover([tmp_path])
    assert [f.name for f in files] == ["bench_found.py"]
    assert "discovered.case" in REGISTRY
    discover([tmp_path])  # importing the same file again is harmless
    assert REGISTRY.get("discovered.case").source.endswith("bench_found.py")


def test_discover_rejects_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither a file nor a directory"):
        discover([tmp_path / "nope"])


@pytest.mark.usefixtures("clean_registry")
def test_load_entry_points_imports_each_listed_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from importlib import metadata

    from torchsmith.bench import load_entry_points

    (tmp_path / "fake_suite_benchmarks.py").write_text(
        "from torchsmith.bench import benchmark\n"
        "@benchmark('fake_suite.step')\n"
        "def step():\n    return lambda: None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fake_suite_benchmarks", raising=False)
    entry = metadata.EntryPoint(
        name="fake_suite", value="fake_suite_benchmarks", group="torchsmith.benchmarks"
    )
    asked: list[str] = []

    def entry_points(*, group: str) -> list[metadata.EntryPoint]:
        asked.append(group)
        return [entry] if group == entry.group else []

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    assert load_entry_points() == ["fake_suite"]
    assert asked == ["torchsmith.benchmarks"]
    assert REGISTRY.get("fake_suite.step").source == "fake_suite_benchmarks"
    monkeypatch.delitem(sys.modules, "fake_suite_benchmarks")
