"""Config text made at random: a shipped recipe's TOML, or the same config as YAML, edited
at random places (YAML's and TOML's syntax, tags, anchors and aliases, deep nesting,
control characters), and ``--set`` overrides of random text. Reading it must give a config
or one ``ConfigError`` that names the file (or the override), in a message of bounded
length, never another exception: not a RecursionError from deep nesting, and not an
exponential message or copy from a few hundred bytes of aliases ("billion laughs").

The default run tries the same few dozen each time; ``--run-slow`` many more, new ones
each time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from torchsmith.interfaces import ConfigError
from torchsmith.trainer import load_config
from torchsmith.trainer._api import recipe_path

RECIPES = ["digits-classifier", "simclr-digits", "char-gpt"]
FRAGMENTS = ["[", "]", "{", "}", "[[", "]]", ",", ":", ": ", "=", " = ", "#", "- ", "? ",
             "---", "...", "\n", "\t", "\r\n", "\x00", "\ufeff", "\x1b", '"', "'", '"""',
             "'''", "\\", "\\u0000", "&a ", "*a", "<<: *a", "!!binary ", "!!set ",
             "!!python/object/apply:os.system ", "!!int ", "!!float ", "!!str ", "!!timestamp ",
             "!!map ", "!!seq ", "!custom ", "%YAML 1.1\n---\n", "~", "null", "1e999", "-0",
             ".nan", "-.inf", "0x", "0o8", "1_", "2026-11-26", "12:30", "yes", "on",
             "[model]", "[[model]]", "model = 1", "model: 1", "kind = \"mlp\"", "a.b.c = 1",
             "é", "😀", "\U0010ffff", "\ud800"]  # fmt: skip
KEYS = ["model", "model.kind", "model.hidden", "data.kind", "optim.lr", "optim.name",
        "loader.batch_size", "training.max_steps", "eval.every_steps", "checkpoint.metric",
        "task.kind", "task.top_k", "name", "seed", "x", "model.hidden.0", "optim.lr.x"]  # fmt: skip
MAX_MESSAGE = 4000


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def laughs(levels: int) -> str:
    """A few hundred bytes whose aliases expand to 9**levels values."""
    parts = ["l0: &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    parts += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "{" + ", ".join(parts) + "}"


STRUCTURES = st.one_of(
    st.integers(1, 700).map(_nested),
    st.integers(2, 9).map(laughs),
    st.just("&s [1, *s]"),
    st.sampled_from(["9" * 5000, "0x" + "f" * 5000, "1" + "0" * 400 + ".5"]),  # past 4300 digits
    st.just("{<<: &m {a: 1}, b: *m}"),
)


@st.composite
def config_texts(draw: st.DrawFn) -> tuple[str, str]:
    """(suffix, text): a recipe as TOML or YAML with one to four random edits."""
    path = recipe_path(draw(st.sampled_from(RECIPES)))
    suffix = draw(st.sampled_from([".toml", ".yaml"]))
    if suffix == ".toml":
        text = path.read_text(encoding="utf-8")
    else:
        text = yaml.safe_dump(load_config(path)[0].model_dump(), sort_keys=False)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        how = draw(st.sampled_from(["insert", "insert", "delete", "structure", "line"]))
        if how == "insert":
            piece = draw(st.sampled_from(FRAGMENTS) | st.text(max_size=6))
            text = text[:at] + piece + text[at:]
        elif how == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 40)) :]
        elif how == "structure":
            text = text[:at] + draw(STRUCTURES) + text[at:]
        else:  # a line of its own: a key with a structured or random value
            key = draw(st.sampled_from(KEYS)).split(".")[-1]
            value = draw(STRUCTURES | st.sampled_from(FRAGMENTS))
            sep = " = " if suffix == ".toml" else ": "
            text = text[:at] + f"\n{key}{sep}{value}\n" + text[at:]
    return suffix, text


overrides = st.lists(
    st.tuples(
        st.sampled_from(KEYS) | st.text(max_size=8),
        STRUCTURES | st.sampled_from(FRAGMENTS) | st.text(max_size=12),
    ).map(lambda kv: f"{kv[0]}={kv[1]}"),
    min_size=1,
    max_size=3,
)


def _read(source: str | Path, sets: list[str], names: str) -> None:
    try:
        load_config(source, sets)
    except ConfigError as exc:
        message = str(exc)
        assert names in message, message
        assert len(message) <= MAX_MESSAGE, f"{len(message)} characters: {message[:300]}"
        event("refused")
    else:
        event("read")


def _check_text(tmp: Path, case: tuple[str, str]) -> None:
    suffix, text = case
    note(repr(text))
    path = tmp / f"config{suffix}"
    try:
        path.write_text(text, encoding="utf-8")
    except UnicodeEncodeError:  # a lone surrogate: written as bytes, which UTF-8 refuses
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
    _read(path, [], str(path))


def _check_overrides(sets: list[str]) -> None:
    note(repr(sets))
    _read("digits-classifier", sets, "override")


_examples: dict[str, Any] = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@settings(max_examples=60, derandomize=True, **_examples)  # the same 60 on every run
@given(case=config_texts())
def test_a_config_file_edited_at_random_reads_or_is_a_config_error(
    tmp_path: Path, case: tuple[str, str]
) -> None:
    _check_text(tmp_path, case)


@settings(max_examples=60, derandomize=True, **_examples)
@given(sets=overrides)
def test_random_overrides_read_or_are_a_config_error(sets: list[str]) -> None:
    _check_overrides(sets)


@pytest.mark.slow
@settings(max_examples=1000, **_examples)
@given(case=config_texts())
def test_many_edited_config_files(tmp_path: Path, case: tuple[str, str]) -> None:
    _check_text(tmp_path, case)


@pytest.mark.slow
@settings(max_examples=1000, **_examples)
@given(sets=overrides)
def test_many_random_overrides(sets: list[str]) -> None:
    _check_overrides(sets)
