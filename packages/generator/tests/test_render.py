"""Rendering: literal filters, strict templates, overrides and the shape of the output."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import jinja2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from torchsmith.generator import list_presets, resolve_spec
from torchsmith.generator._render import environment, pyliteral, pyrepr, render
from torchsmith.generator._validate import find_ruff

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@given(plain)
def test_literals_round_trip_through_the_python_parser(value: object) -> None:
    assert ast.literal_eval(pyliteral(value)) == value


@given(st.text())
def test_strings_cannot_break_out_of_their_literal(text: str) -> None:
    source = f"x = {pyrepr(text)}\n"
    tree = ast.parse(source)
    assert len(tree.body) == 1
    assert ast.literal_eval(source.split("=", 1)[1].strip()) == text


def test_objects_and_non_finite_floats_are_refused() -> None:
    with pytest.raises(TypeError):
        pyrepr(object())
    with pytest.raises(TypeError, match="non-finite"):
        pyrepr(float("inf"))


def test_undefined_variables_fail_loudly(tmp_path: Path) -> None:
    (tmp_path / "README.md.j2").write_text("{{ no_such_variable }}\n")
    with pytest.raises(jinja2.TemplateError, match=r"README.md.j2.*no_such_variable"):
        render(resolve_spec("gpt2"), "cpu", [tmp_path])


def test_custom_template_directory_overrides_a_builtin(tmp_path: Path) -> None:
    (tmp_path / "README.md.j2").write_text("# {{ name }} by our team\n")
    files = render(resolve_spec("gpt2"), "cpu", [tmp_path])
    assert files["README.md"] == "# gpt2 by our team\n"
    assert "class GPT2LMHeadModel" in files["model.py"]  # the others stay built in


def test_shared_blocks_are_not_repeated_in_family_templates() -> None:
    templates = Path(environment().loader.searchpath[0])  # type: ignore[union-attr]
    for family_template in templates.glob("*/model.py.j2"):
        text = family_template.read_text()
        for block in (
            "def split_heads",
            "ACTIVATIONS = {",
            "def default_device",
            "def build_model",
        ):
            assert block not in text, f"{family_template} repeats {block}"


@pytest.mark.parametrize("preset", list(list_presets()))
def test_rendered_python_is_ruff_formatted(preset: str, tmp_path: Path) -> None:
    ruff = find_ruff()
    if ruff is None:
        pytest.skip("ruff is not installed")
    for name, text in render(resolve_spec(preset), "cuda").items():
        (tmp_path / name).write_text(text)
    files = [str(path) for path in sorted(tmp_path.glob("*.py"))]
    result = subprocess.run(
        [ruff, "format", "--isolated", "--line-length", "100", "--check", "--diff", *files],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_model_py_never_imports_torchsmith() -> None:
    for preset in list_presets():
        tree = ast.parse(render(resolve_spec(preset), "cpu")["model.py"])
        imported = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        } | {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        }
        assert not any(name.startswith("torchsmith") for name in imported), preset


def test_backend_sets_device_and_dtype() -> None:
    model_py = render(resolve_spec("gpt2"), "cuda")["model.py"]
    assert 'DEVICE = "cuda"' in model_py
    assert "DTYPE = torch.bfloat16" in model_py
