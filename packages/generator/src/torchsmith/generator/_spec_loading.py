"""Turn a preset name, a spec file or a dict, plus ``key=value`` overrides, into a spec.

    resolve_spec("gpt2", ["n_layer=2"])  -> ResolvedSpec(name="gpt2", spec=GPT2Spec(...))

A spec file is TOML, YAML or JSON; a transformers config.json works as is. Every
failure is a ConfigError naming the file, the field and what is allowed.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from torchsmith.interfaces import ConfigError

from ._presets import FAMILIES, MODEL_TYPES, PRESETS
from ._specs import FamilySpec

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # used with fullmatch

# Keys of a transformers config.json that are no field of a spec but change the model, with
# the values the templates build: another value is refused, never dropped (dropping
# rope_scaling made a Llama 3.1 config into plain RoPE, 1e-3 off at 2048 tokens).
_DEFAULT_ROPE = (None, {"rope_type": "default"}, {"type": "default"})
_ARCHITECTURE_KEYS: dict[str, dict[str, tuple[object, ...]]] = {
    "gpt2": {
        "scale_attn_weights": (True,),
        "scale_attn_by_inverse_layer_idx": (False,),
        "add_cross_attention": (False,),
    },
    "llama": {"rope_scaling": _DEFAULT_ROPE},
    "bert": {
        "position_embedding_type": ("absolute",),
        "is_decoder": (False,),
        "add_cross_attention": (False,),
    },
}
SPEC_SUFFIXES = (".toml", ".yaml", ".yml", ".json")

Overrides = Iterable[str] | Mapping[str, Any]


@dataclass(frozen=True)
class ResolvedSpec:
    """A validated spec and the name its output is known by."""

    name: str
    spec: FamilySpec

    @property
    def family(self) -> str:
        return self.spec.family


def resolve_spec(source: str | Path | Mapping[str, Any], overrides: Overrides = ()) -> ResolvedSpec:
    data, default_name, origin = _read_source(source)
    data = dict(data)
    name = _check_name(str(data.pop("name", default_name)), origin)
    family = _family_of(data, origin)
    cls = FAMILIES[family]
    from_transformers = "model_type" in data
    data.pop("family", None)
    data.pop("model_type", None)
    if from_transformers:
        data = _known_fields(cls, data)
    for key, value in _parse_overrides(overrides):
        if key == "name":
            name = _check_name(str(value), "override")
        else:
            _set_path(data, key, value, cls)
    return ResolvedSpec(name=name, spec=validate_spec(cls, data, origin))


def _check_name(name: str, origin: str) -> str:
    if not NAME_PATTERN.fullmatch(name):  # match() took a trailing newline ($)
        raise ConfigError(
            f"spec field 'name' = {name!r} ({origin}): allowed are 1-64 characters of "
            "letters, digits, '.', '_' and '-', starting with a letter or digit"
        )
    return name


def validate_spec(cls: type[FamilySpec], data: Mapping[str, Any], origin: str) -> FamilySpec:
    try:
        return cls.model_validate(dict(data))
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise ConfigError(f"invalid {cls.family} spec ({origin}): {problems}") from None


def _describe(error: Any) -> str:
    field = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"unknown field {field!r}"
    if not field:  # a check across fields; its message names them
        return message
    return f"field {field!r}: {message} (got {error.get('input')!r})"


def _read_source(source: str | Path | Mapping[str, Any]) -> tuple[Mapping[str, Any], str, str]:
    if isinstance(source, Mapping):
        return source, "model", "dict spec"
    text = str(source)
    if text in PRESETS:
        return PRESETS[text], text, f"preset {text!r}"
    path = Path(text)
    if path.suffix.lower() not in SPEC_SUFFIXES:
        raise ConfigError(
            f"spec {text!r} is neither a preset nor a spec file; presets: "
            f"{', '.join(sorted(PRESETS))}; files end in {', '.join(SPEC_SUFFIXES)}"
        )
    if not path.is_file():
        raise ConfigError(f"spec file {text!r} does not exist")
    data = _parse_file(path)
    stem = path.parent.name if path.name == "config.json" else path.stem
    return data, stem if NAME_PATTERN.fullmatch(stem) else "model", f"file {text!r}"


def _parse_file(path: Path) -> Mapping[str, Any]:
    raw = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(raw)
        elif path.suffix.lower() == ".json":
            data = json.loads(raw)
        else:
            data = yaml.safe_load(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"spec file {str(path)!r} could not be parsed: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"spec file {str(path)!r} must hold a table/mapping at the top")
    return data


def _family_of(data: Mapping[str, Any], origin: str) -> str:
    family = data.get("family")
    if family is None and "model_type" in data:
        family = MODEL_TYPES.get(str(data["model_type"]))
        if family is None:
            raise ConfigError(
                f"spec field 'model_type' = {data['model_type']!r} ({origin}): allowed are "
                f"{', '.join(sorted(MODEL_TYPES))}"
            )
    if family not in FAMILIES:
        raise ConfigError(
            f"spec field 'family' = {family!r} ({origin}): allowed are {', '.join(FAMILIES)}"
        )
    return str(family)


def _known_fields(cls: type[FamilySpec], data: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the keys the schema knows (nested configs too); a config.json has many more.
    One that would change the model (``_ARCHITECTURE_KEYS``) must hold what is built."""
    for key, allowed in _ARCHITECTURE_KEYS.get(cls.family, {}).items():
        if key in data and data[key] not in allowed:
            raise ConfigError(
                f"spec field {key!r} = {data[key]!r} is not supported for {cls.family} "
                f"(allowed: {', '.join(repr(v) for v in allowed)}): the generated model "
                "would differ from the config's"
            )
    kept: dict[str, Any] = {}
    for key, value in data.items():
        field = cls.model_fields.get(key)
        if field is None and key != "rope_parameters":
            continue
        sub = field.annotation if field is not None else None
        if isinstance(value, Mapping) and isinstance(sub, type) and issubclass(sub, BaseModel):
            value = {k: v for k, v in value.items() if k in sub.model_fields}
        kept[key] = value
    return kept


def _parse_overrides(overrides: Overrides) -> list[tuple[str, Any]]:
    if isinstance(overrides, Mapping):
        return [(str(key), value) for key, value in overrides.items()]
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like key=value (e.g. n_layer=6)")
        key, raw = key.strip(), raw.strip()
        # a name is text as typed: 007 is no number 7, yes no True
        parsed.append((key, raw if key == "name" else _parse_value(raw)))
    return parsed


def _parse_value(raw: str) -> Any:
    """JSON first (numbers, true/false/null), then YAML scalars, else the string itself."""
    if raw == "None":  # Python spelling of null, as config.json's defaults print
        return None
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except ValueError:
        pass
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    return value if isinstance(value, str | int | float | bool) or value is None else raw


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")  # NaN and Infinity stay strings


def _set_path(data: dict[str, Any], key: str, value: Any, cls: type[FamilySpec]) -> None:
    parts = key.split(".")
    fields: Mapping[str, Any] = cls.model_fields
    target = data
    for depth, part in enumerate(parts):
        if part not in fields:
            where = ".".join(parts[:depth]) or cls.family
            raise ConfigError(
                f"override {key!r}: unknown field {part!r} in {where}; allowed: {', '.join(fields)}"
            )
        if depth == len(parts) - 1:
            target[part] = value
            return
        sub = fields[part].annotation
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            raise ConfigError(f"override {key!r}: field {part!r} has no sub-fields")
        nested = target.get(part)
        target[part] = dict(nested) if isinstance(nested, Mapping) else {}
        target = target[part]
        fields = sub.model_fields
