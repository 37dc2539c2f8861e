"""generate(): files, the artifact record, validation failures, overwrite and path safety."""

from __future__ import annotations

import hashlib
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

import torchsmith.generator._validate as validate_module
from torchsmith.generator import GenerationError, ModelCodeGenerator, generate
from torchsmith.generator._render import BUILTIN_TEMPLATES
from torchsmith.generator._validate import Validator
from torchsmith.interfaces import ConfigError, ModelGenerator

FAST_CHECKS = ["parse", "lint", "import", "forward", "parameters"]
TINY_GPT2 = ["n_layer=2", "n_embd=32", "n_head=4", "vocab_size=64", "n_positions=32"]
OUTPUTS = {"model.py", "config.json", "test_model.py", "bench_model.py", "README.md"}


def test_generate_writes_every_file_and_records_the_checks(tmp_path: Path) -> None:
    out = tmp_path / "out" / "gpt2"
    artifact = generate("gpt2", out, overrides=TINY_GPT2, validate=FAST_CHECKS)
    assert {path.name for path in out.iterdir()} == OUTPUTS
    assert artifact.directory == str(out.resolve())
    assert (artifact.name, artifact.family, artifact.backend) == ("gpt2", "gpt2", "cpu")
    assert artifact.validated
    for record in artifact.files:
        data = (out / record.path).read_bytes()
        assert (record.bytes, record.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    for check in FAST_CHECKS:
        assert artifact.validation[check].startswith("passed"), artifact.validation
    assert artifact.validation["tests"] == "skipped: not requested"
    assert artifact.spec["n_layer"] == 2
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["gpt2"]  # no staging left


def test_no_validation_skips_every_check(tmp_path: Path) -> None:
    artifact = generate("t5-small", tmp_path / "t5", validate=False)
    assert not artifact.validated
    assert all(result.startswith("skipped") for result in artifact.validation.values())


def test_existing_files_need_force(tmp_path: Path) -> None:
    generate("gpt2", tmp_path, overrides=TINY_GPT2, validate=False)
    (tmp_path / "model.py").write_text("# edited by hand\n")
    with pytest.raises(GenerationError, match="--force"):
        generate("gpt2", tmp_path, overrides=TINY_GPT2, validate=False)
    assert (tmp_path / "model.py").read_text() == "# edited by hand\n"
    generate("gpt2", tmp_path, overrides=TINY_GPT2, validate=False, force=True)
    assert "class GPT2LMHeadModel" in (tmp_path / "model.py").read_text()


def _broken_templates(tmp_path: Path, old: str, new: str) -> Path:
    custom = tmp_path / "templates"
    (custom / "gpt2").mkdir(parents=True)
    text = (BUILTIN_TEMPLATES / "gpt2" / "model.py.j2").read_text()
    assert old in text
    (custom / "gpt2" / "model.py.j2").write_text(text.replace(old, new, 1))
    return custom


def test_runtime_failure_names_file_line_and_template_and_writes_nothing(tmp_path: Path) -> None:
    custom = _broken_templates(
        tmp_path,
        "        return x + self.mlp(self.ln_2(x))",
        "        return x + self.mlp(self.ln_2(x)).transpose(0, 1)",
    )
    out = tmp_path / "out" / "broken"
    with pytest.raises(GenerationError) as info:
        generate("gpt2", out, overrides=TINY_GPT2, template_dirs=[custom], validate=FAST_CHECKS)
    message = str(info.value)
    template_lines = (custom / "gpt2" / "model.py.j2").read_text().splitlines()
    broken = 1 + next(i for i, line in enumerate(template_lines) if "transpose(0, 1)" in line)
    assert "forward check failed" in message
    assert f"(template gpt2/model.py.j2 line {broken})" in message
    assert "transpose(0, 1)" in message  # the offending generated line is quoted
    assert info.value.artifact is not None
    assert info.value.artifact.validation["import"].startswith("passed")
    assert info.value.artifact.validation["forward"].startswith("failed")
    assert not out.exists()
    assert not (tmp_path / "out").exists()  # nor the folder made to hold it


def test_syntax_error_is_caught_by_the_parse_check(tmp_path: Path) -> None:
    custom = _broken_templates(tmp_path, "class Block(nn.Module):", "class Block(nn.Module)")
    with pytest.raises(GenerationError, match=r"parse check failed: model.py line \d+ \(template"):
        generate("gpt2", tmp_path / "out", template_dirs=[custom], validate=["parse"])


def test_lint_failure_is_reported(tmp_path: Path) -> None:
    if validate_module.find_ruff() is None:
        pytest.skip("ruff is not installed")
    custom = _broken_templates(tmp_path, "import json\n", "import json\nimport os\n")
    with pytest.raises(
        GenerationError, match=r"model.py:\d+:\d+ \[template gpt2/model.py.j2 line \d+\]: F401.*os"
    ):
        generate("gpt2", tmp_path / "out", template_dirs=[custom], validate=["lint"])


def test_missing_suites_skip_their_checks_with_the_install_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(validate_module, "_exports", lambda module, attribute: False)
    artifact = generate("gpt2", tmp_path, overrides=TINY_GPT2, validate=["tests", "bench"])
    assert artifact.validation["tests"].startswith("skipped: torchsmith-testing is not installed")
    assert "pip install torchsmith-bench" in artifact.validation["bench"]


def test_the_bench_check_does_not_build_a_model_too_big_for_the_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(validate_module, "_exports", lambda module, attribute: True)
    monkeypatch.setattr(validate_module, "free_memory", lambda device: 2**29)
    ran: list[str] = []
    monkeypatch.setattr(Validator, "_subprocess", lambda self, check, command: ran.append(check))
    big = generate("gpt2", tmp_path / "big", validate=["bench"])  # 124M: 0.46 GiB of weights
    assert big.validation["bench"] == (
        "skipped: building the full-size model takes 0.5 GiB, over half the 0.5 GiB free "
        "on cpu; run bench_model.py where it fits"
    )
    assert ran == []
    small = generate("gpt2", tmp_path / "small", overrides=TINY_GPT2, validate=["bench"])
    assert small.validation["bench"].startswith("passed")
    assert ran == ["bench"]


def test_the_bench_check_counts_the_float32_build_before_a_bf16_cast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(validate_module, "_exports", lambda module, attribute: True)
    monkeypatch.setattr(validate_module, "free_memory", lambda device: 2**29)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the backend's device
    big = generate("gpt2", tmp_path / "big", backend="cuda", validate=["bench"])
    # 124M parameters: 4 bytes each as built, 2 more as cast to bf16, 0.7 GiB in all.
    assert big.validation["bench"].startswith("skipped: building the full-size model takes 0.7")


def test_free_memory_is_known_on_this_machine() -> None:
    free = validate_module.free_memory(torch.device("cpu"))
    if Path("/proc/meminfo").exists():
        assert free is not None
    assert free is None or 2**20 < free < 2**50
    assert validate_module.free_memory(torch.device("meta")) is None


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="backend 'tpu'"):
        generate("gpt2", tmp_path, backend="tpu")
    with pytest.raises(ConfigError, match="unknown checks"):
        generate("gpt2", tmp_path / "x", validate=["typecheck"])
    (tmp_path / "file").write_text("")
    with pytest.raises(GenerationError, match="not a directory"):
        generate("gpt2", tmp_path / "file", validate=False)


def test_generated_model_reads_config_json_at_run_time(
    tmp_path: Path, import_model: Callable[[Path], ModuleType]
) -> None:
    generate("gpt2", tmp_path, overrides=TINY_GPT2, validate=False)
    module = import_model(tmp_path)
    assert module.build_model().config.n_layer == 2
    config = (tmp_path / "config.json").read_text().replace('"n_layer": 2', '"n_layer": 3')
    (tmp_path / "config.json").write_text(config)
    assert len(module.build_model().transformer["h"]) == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback without CUDA")
def test_cuda_backend_falls_back_to_cpu_with_a_warning(
    tmp_path: Path, import_model: Callable[[Path], ModuleType]
) -> None:
    generate("gpt2", tmp_path, overrides=TINY_GPT2, backend="cuda", validate=False)
    module = import_model(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = module.build_model()
    assert any("cuda is not available" in str(w.message) for w in caught)
    assert next(model.parameters()).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_backend_builds_bfloat16_on_the_gpu(
    tmp_path: Path, import_model: Callable[[Path], ModuleType]
) -> None:
    generate("smollm-135m", tmp_path, backend="cuda", validate=FAST_CHECKS)
    module = import_model(tmp_path)
    model = module.build_model()
    parameter = next(model.parameters())
    assert (parameter.device.type, parameter.dtype) == ("cuda", torch.bfloat16)
    assert torch.isfinite(model(**module.example_inputs(batch_size=2)).float()).all()


def test_protocol_adapter_is_a_model_generator(tmp_path: Path) -> None:
    generator = ModelCodeGenerator(validate=False)
    assert isinstance(generator, ModelGenerator)
    artifact = generator.generate({"family": "vit", "name": "tiny-vit"}, tmp_path / "v")
    assert artifact.name == "tiny-vit"
    assert "vit" in generator.families()
    shutil.rmtree(tmp_path / "v")


@pytest.mark.parametrize("backend", ["cpu", "cuda"])
def test_longest_allowed_name_still_lints_clean(tmp_path: Path, backend: str) -> None:
    if validate_module.find_ruff() is None:
        pytest.skip("ruff is not installed")
    name = "n" + "-x" * 31 + "z"  # 64 characters, the most a name may have
    overrides = [*TINY_GPT2, f"name={name}"]
    artifact = generate("gpt2", tmp_path, overrides=overrides, backend=backend, validate=["lint"])
    assert artifact.name == name
    assert artifact.validation["lint"].startswith("passed")


def test_a_line_from_a_shared_macro_is_traced_to_the_macro_file(tmp_path: Path) -> None:
    custom = tmp_path / "templates"
    custom.mkdir()
    blocks = (BUILTIN_TEMPLATES / "_blocks.py.j2").read_text()
    old = "    return x.view(B, T, -1, head_dim).transpose(1, 2)"
    assert old in blocks
    (custom / "_blocks.py.j2").write_text(blocks.replace(old, old.replace("-1", "-7"), 1))
    broken = 1 + blocks.splitlines().index(old)
    with pytest.raises(GenerationError, match=rf"template _blocks.py.j2 line {broken}\)"):
        generate(
            "gpt2",
            tmp_path / "out",
            overrides=TINY_GPT2,
            template_dirs=[custom],
            validate=FAST_CHECKS,
        )


def test_a_symlink_in_the_output_cannot_redirect_a_write(tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").symlink_to(outside)  # the last file written
    with pytest.raises(GenerationError, match=r"README\.md': it is a symbolic link"):
        generate("gpt2", out, overrides=TINY_GPT2, validate=False, force=True)
    assert outside.read_text() == "precious\n"
    assert sorted(path.name for path in out.iterdir()) == ["README.md"]  # nothing else moved


def test_a_symlink_inside_the_output_is_not_written_through(tmp_path: Path) -> None:
    """A link to a file in the output folder itself passed the 'stays inside' check, and
    --force wrote the README over the user's notes."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    (out / "README.md").symlink_to("notes.txt")
    with pytest.raises(GenerationError, match="it is a symbolic link"):
        generate("gpt2", out, overrides=TINY_GPT2, validate=False, force=True)
    assert (out / "notes.txt").read_text() == "mine\n"
    assert sorted(path.name for path in out.iterdir()) == ["README.md", "notes.txt"]


def test_an_output_that_cannot_be_replaced_fails_before_anything_is_written(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    (out / "README.md").mkdir(parents=True)  # a directory where a file goes
    with pytest.raises(GenerationError, match=r"README\.md': it is not a file"):
        generate("gpt2", out, overrides=TINY_GPT2, validate=False, force=True)
    assert sorted(path.name for path in out.iterdir()) == ["README.md"]


def test_an_output_under_a_file_is_a_generation_error(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("")
    with pytest.raises(GenerationError, match="cannot create"):  # not a bare OSError
        generate("gpt2", tmp_path / "a_file" / "x" / "out", overrides=TINY_GPT2, validate=False)
    assert (tmp_path / "a_file").is_file()
