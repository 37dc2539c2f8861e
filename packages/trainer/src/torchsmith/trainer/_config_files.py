"""Reading a config: TOML or YAML files, ``--set a.b=value`` overrides, and validation
into one :class:`ConfigError` that names each bad field.

YAML is read by the YAML 1.2 core schema's rules plus TOML's ``_`` digit separators, so it
reads numbers and booleans as TOML does: ``1e-4`` is a number (YAML 1.1, PyYAML's default,
makes it text), ``1_000`` is 1000, ``017`` is 17 (not octal 15), ``1:30`` is text (not 90),
``on``/``yes`` are text (not true) and so is ``2026-11-26`` (not a date). The same config
means the same in a ``.toml`` file, a ``.yaml`` file and a ``--set``.
"""

from __future__ import annotations

import contextlib
import math
import re
import reprlib
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from torchsmith.interfaces import ConfigError

from ._config import (
    CLIPConfig,
    DigitsDataConfig,
    EncoderConfig,
    ExperimentConfig,
    GPTConfig,
    ImportedDataConfig,
    ImportedModelConfig,
    MLPConfig,
    TextDataConfig,
)

_BOOL, _INT, _FLOAT, _DATE = (
    f"tag:yaml.org,2002:{t}" for t in ("bool", "int", "float", "timestamp")
)


class DuplicateKeyError(yaml.YAMLError):  # type: ignore[misc]
    """A mapping that gives a key twice: YAML 1.2 (like TOML) says keys are unique, and
    PyYAML would keep the last one without a word."""


class _Yaml12Loader(yaml.SafeLoader):  # type: ignore[misc]
    """PyYAML's safe loader with the YAML 1.2 core schema's booleans, integers and floats."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _INT, _FLOAT, _DATE)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Yaml12Loader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?[0-9]+(?:_[0-9]+)*|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_Yaml12Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:_[0-9]+)*(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)


def _int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    for base in (10, 0):  # "017" and "1_000" in base 10; "0x1f", "0o17", "0b1" by prefix
        with contextlib.suppress(ValueError):
            return int(text, base)
    if len(digits := text.lstrip("+-").replace("_", "")) > 4300 and digits.isdigit():
        raise UnboundedYamlError(
            f"holds an integer of {len(digits)} digits, more than Python reads (4300)"
        )
    raise _not_a(node, text, "an integer")


def _float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = loader.construct_scalar(node)
    try:
        return float(text.lower().replace(".inf", "inf").replace(".nan", "nan"))
    except ValueError:
        raise _not_a(node, text, "a number") from None


def _not_a(node: yaml.ScalarNode, text: str, kind: str) -> yaml.YAMLError:
    shown = _INPUT.repr(text)
    return yaml.constructor.ConstructorError(None, None, f"{shown} is not {kind}", node.start_mark)


def _timestamp(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    """An explicit ``!!timestamp`` (implicit dates are text here); PyYAML's own constructor
    fails with an AttributeError on text that is not one."""
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except (AttributeError, ValueError):
        raise _not_a(node, loader.construct_scalar(node), "a timestamp") from None


_Yaml12Loader.add_constructor(_INT, _int)
_Yaml12Loader.add_constructor(_FLOAT, _float)
_Yaml12Loader.add_constructor(_DATE, _timestamp)


MAX_VALUES = 100_000  # a config holds a few hundred values; aliases may not multiply that


class UnboundedYamlError(yaml.YAMLError):  # type: ignore[misc]
    """A document no config can hold: it refers to itself, its aliases multiply it past
    ``MAX_VALUES``, or it holds an integer longer than Python reads."""


def load_yaml(text: str) -> Any:
    """``text`` read as YAML by the 1.2 core schema's rules (see the module's docstring).

    Anchors and aliases work, but a document whose aliases would expand it past
    ``MAX_VALUES`` values (a "billion laughs" in a few hundred bytes: printing or saving it
    would take the machine's memory) or that contains itself is refused.
    """
    loader = _Yaml12Loader(text)  # a SafeLoader: builds no Python objects
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if (size := _expanded_size(node, {})) > MAX_VALUES:
            raise UnboundedYamlError(
                f"expands through its aliases to {size:,} values, more than {MAX_VALUES:,}"
            )
        _refuse_duplicate_keys(node)
        data = loader.construct_document(node)
        check_integers(data, UnboundedYamlError)
        return data
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        # PyYAML's own constructors fail so on some explicit tags (`!!timestamp x`)
        raise yaml.constructor.ConstructorError(None, None, f"cannot be read: {exc}") from None
    finally:
        loader.dispose()


def check_integers(data: Any, error: type[Exception]) -> None:
    """Raise ``error`` for an integer in ``data`` longer than Python turns into text (4300
    digits; a hex one has no such limit): pydantic, given one, reports that ValueError as
    unraisable before it refuses the value, and no error message could show it."""
    if isinstance(data, dict):
        for key, value in data.items():
            check_integers(key, error)
            check_integers(value, error)
    elif isinstance(data, list):
        for value in data:
            check_integers(value, error)
    elif isinstance(data, int) and data.bit_length() > 14_000:
        digits = _digits(data)
        raise error(f"holds an integer of about {digits} digits, more than Python reads (4300)")


def _refuse_duplicate_keys(root: yaml.Node) -> None:
    """A DuplicateKeyError for a mapping that gives a key twice, read off the document as
    written: before construction, whose merges (``<<: *base``) put the merged keys beside a
    mapping's own, which may override them."""
    seen_nodes: set[int] = set()
    todo = [root]
    while todo:
        node = todo.pop()
        if id(node) in seen_nodes:  # an alias: checked where its anchor is
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            todo.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            keys: set[tuple[str, str]] = set()
            for key, value in node.value:
                todo.extend((key, value))
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                if (key.tag, key.value) in keys:
                    line = key.start_mark.line + 1
                    raise DuplicateKeyError(
                        f"the key {key.value!r} is given twice (again on line {line})"
                    )
                keys.add((key.tag, key.value))


def _digits(x: int) -> int:
    """About how many decimal digits ``x`` has, without writing it out."""
    return int(x.bit_length() * math.log10(2)) + 1


def _expanded_size(node: yaml.Node, sizes: dict[int, int | None]) -> int:
    """The number of values under ``node`` with each alias written out in full (``sizes``
    memoizes shared nodes, so this is linear in the document, not in its expansion)."""
    key = id(node)
    if key in sizes:
        known = sizes[key]
        if known is None:
            mark = node.start_mark
            raise UnboundedYamlError(
                f"holds itself through an alias (the collection at line {mark.line + 1}, "
                f"column {mark.column + 1})"
            )
        return known
    sizes[key] = None  # in progress: meeting it again below is a cycle
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    size = 1 + sum(_expanded_size(child, sizes) for child in children)
    sizes[key] = size
    return size


def read_config_file(path: Path) -> dict[str, Any]:
    """The raw mapping in a ``.toml``, ``.yaml`` or ``.yml`` file."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is no TOML syntax
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 (byte {exc.start})") from exc
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = load_yaml(text) or {}
        else:
            raise ConfigError(f"config file {path}: suffix must be .toml, .yaml or .yml")
    except UnboundedYamlError as exc:
        raise ConfigError(f"config file {path}: the document {exc}") from None
    except DuplicateKeyError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} is not valid: {exc}") from exc
    except ValueError as exc:  # tomllib: an integer past Python's 4300-digit limit
        raise ConfigError(f"config file {path} is not valid: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply to read") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    try:
        check_integers(data, ValueError)  # TOML's hex integers (YAML's are checked as read)
    except ValueError as exc:
        raise ConfigError(f"config file {path}: the document {exc}") from None
    return data


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """``data`` with each ``"a.b=value"`` set; values parse as YAML 1.2 (``3e-4``,
    ``[1, 2]``, ``{a: 1}``, ``null``), and what only YAML's block syntax would make
    something else is kept as text: ``a: b`` (a mapping is written ``{a: 1}``), ``- a``
    (a list is written ``[a]``), ``---``, and unquoted text holding a ``#`` (``Step #1``
    is not cut at a YAML comment)."""
    result = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {_INPUT.repr(item)} must look like section.field=value")
        try:
            value = load_yaml(raw) if raw.strip() else ""
        except (UnboundedYamlError, RecursionError) as exc:
            reason = "is nested too deeply" if isinstance(exc, RecursionError) else exc
            raise ConfigError(f"override {_INPUT.repr(item)}: the value {reason}") from None
        except DuplicateKeyError as exc:
            raise ConfigError(f"override {_INPUT.repr(item)}: {exc}") from None
        except yaml.YAMLError:
            value = raw
        if isinstance(value, dict) and not raw.lstrip().startswith("{"):
            value = raw  # "The loop: it" is text; a mapping is written {a: 1}
        elif isinstance(value, list) and not raw.lstrip().startswith("["):
            value = raw  # "- a list item" is text; a list is written [a]
        elif value is None and raw.strip() in ("---", "..."):
            value = raw  # document markers: text, not an empty document
        elif "#" in raw and isinstance(value, str | None) and raw.strip()[:1] not in "'\"[{":
            value = raw.strip()  # text with a "#" as written: "Step #1" is not "Step"
        *parents, leaf = key.strip().split(".")
        node = result
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                shown = _INPUT.repr(item)
                raise ConfigError(f"override {shown}: {part!r} is a value, not a section")
            node = child
        node[leaf] = value
    return result


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def validate_config(data: Mapping[str, Any], origin: str | None = None) -> ExperimentConfig:
    """An :class:`ExperimentConfig`, or one ConfigError naming each bad field (and
    ``origin``, where the values came from: a file, a recipe, overrides)."""
    try:
        return ExperimentConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin)) from None


class _Shown(reprlib.Repr):
    """A bad value as far as it helps: a few levels, items and characters of it."""

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # repr() refuses past 4300 digits; nobody reads 40 of them
            return f"<an integer of about {_digits(x)} digits>"
        return super().repr_int(x, level)


_INPUT = _Shown()
_INPUT.maxlevel, _INPUT.maxstring, _INPUT.maxother = 2, 80, 80
_MAX_LINES = 20


def _describe(exc: ValidationError, origin: str | None) -> str:
    lines = []
    for error in exc.errors():
        if error["type"] == "value_error" and not error["loc"]:
            lines.append(str(error["ctx"]["error"]))  # cross-field: it names its fields
            continue
        loc = error["loc"]
        if len(loc) > 1 and loc[0] in ("model", "data") and loc[1] in _TAGGED:
            loc = (loc[0], *loc[2:])  # pydantic names the union's tag: model.mlp.hidden
        where = ".".join(str(p) for p in loc) or "config"
        if len(where) > 100:  # a key of thousands of characters, as pasted
            where = f"{where[:60]}...{where[-30:]}"
        if error["type"] == "value_error":  # a section's own check: its message is ours
            text = str(error["ctx"]["error"])
            field, sep, rest = text.partition(": ")
            if sep and field in _fields_at(error["loc"]):  # it names one of the section's fields
                where, text = f"{where}.{field}", rest
            lines.append(f"{where}: {text}")
            continue
        message = error["msg"]
        if error["type"] == "union_tag_invalid":  # pydantic's message holds the whole tag
            ctx = error["ctx"]
            where += "." + ctx["discriminator"].strip("'")
            given = error["input"]  # pydantic's ctx holds the tag as text: show it as written
            tag = given.get(ctx["discriminator"].strip("'")) if isinstance(given, dict) else None
            message = f"unknown kind {_INPUT.repr(tag)} (allowed: {ctx['expected_tags']})"
        allowed = (error.get("ctx") or {}).get("expected")
        if error["type"] == "extra_forbidden":
            message = f"unknown field (allowed: {', '.join(_fields_at(error['loc'][:-1]))})"
        if allowed and str(allowed) not in message:
            message += f" (allowed: {allowed})"
        lines.append(f"{where}: {message}; got {_INPUT.repr(error.get('input'))}")
    if len(lines) > _MAX_LINES:  # a list of thousands of bad items: the first ones show it
        lines[_MAX_LINES:] = [f"... and {len(lines) - _MAX_LINES} more errors"]
    # A section's own check may quote a value whole: a pasted page of text is cut.
    lines = [f"{line[:240]} ... {line[-80:]}" if len(line) > 400 else line for line in lines]
    where = f" ({origin})" if origin else ""
    return f"invalid config{where}:\n  " + "\n  ".join(lines)


_TAGGED: dict[str, type[BaseModel]] = {
    cls.model_fields["kind"].default: cls
    for cls in (
        MLPConfig,
        EncoderConfig,
        GPTConfig,
        CLIPConfig,
        ImportedModelConfig,
        DigitsDataConfig,
        TextDataConfig,
        ImportedDataConfig,
    )
}


def _fields_at(loc: tuple[int | str, ...]) -> list[str]:
    """The field names of the section at ``loc`` (tags of unions step into their class)."""
    section: type[BaseModel] = ExperimentConfig
    for part in loc:
        if isinstance(part, str) and part in _TAGGED and part not in section.model_fields:
            section = _TAGGED[part]
            continue
        field = section.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            section = annotation
    return sorted(section.model_fields)
