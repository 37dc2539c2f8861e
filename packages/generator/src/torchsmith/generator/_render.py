"""Render a spec's files with Jinja2 (strict undefined variables, no autoescape).

Spec values reach the code only through ``pyrepr``/``pyliteral``, which accept plain data
(str, int, float, bool, None, lists and dicts of them) and emit Python literals; model
hyperparameters are not rendered at all: model.py reads them from config.json.
Custom template directories come first, so a file there overrides the built-in one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from ._spec_loading import ResolvedSpec

BUILTIN_TEMPLATES = Path(__file__).with_name("templates")

# Output file -> template; "{family}" is replaced by the spec's family.
OUTPUTS: dict[str, str] = {
    "model.py": "{family}/model.py.j2",
    "config.json": "config.json.j2",
    "test_model.py": "test_model.py.j2",
    "bench_model.py": "bench_model.py.j2",
    "README.md": "README.md.j2",
}


@dataclass(frozen=True)
class Backend:
    name: str
    device: str
    dtype: str  # a torch dtype attribute name
    note: str


BACKENDS: dict[str, Backend] = {
    "cpu": Backend("cpu", "cpu", "float32", "float32; SDPA picks its CPU flash kernel"),
    "cuda": Backend("cuda", "cuda", "bfloat16", "bfloat16; SDPA uses flash/mem-efficient kernels"),
    "mps": Backend("mps", "mps", "float16", "float16; SDPA on Metal"),
}


def pyrepr(value: Any) -> str:
    """A Python literal for a scalar of plain data; anything else is refused."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"cannot render non-finite float {value!r} as a literal")
        return repr(value)
    if isinstance(value, str):
        return _string_literal(value)
    raise TypeError(f"cannot render {type(value).__name__} as a Python literal")


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _string_literal(text: str) -> str:
    """A double-quoted, pure-ASCII Python literal: nothing in ``text`` can end it early."""
    out = []
    for char in text:
        code = ord(char)
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif 32 <= code < 127:
            out.append(char)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def pyliteral(value: Any, indent: int = 0) -> str:
    """Like ``pyrepr`` for nested dicts and lists, laid out one item a line as ruff would."""
    pad, inner = " " * indent, " " * (indent + 4)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{pyrepr(str(k))}: {pyliteral(v, indent + 4)}," for k, v in value.items()]
        return "{\n" + "\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        items = [f"{inner}{pyliteral(v, indent + 4)}," for v in value]
        return "[\n" + "\n".join(items) + f"\n{pad}]"
    return pyrepr(value)


def environment(template_dirs: Sequence[str | Path] = ()) -> jinja2.Environment:
    search = [str(Path(d)) for d in template_dirs] + [str(BUILTIN_TEMPLATES)]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(search),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pyrepr"] = pyrepr
    env.filters["pyliteral"] = pyliteral
    env.filters["tojson_pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=False)
    return env


def template_source(template_dirs: Sequence[str | os.PathLike[str]] = ()) -> Callable[[str], str]:
    """template name -> its source, searched like rendering searches (custom dirs first)."""
    env = environment([Path(d) for d in template_dirs])
    loader = env.loader
    assert loader is not None

    def source(name: str) -> str:
        return loader.get_source(env, name)[0]

    return source


def template_names(family: str) -> dict[str, str]:
    return {out: template.format(family=family) for out, template in OUTPUTS.items()}


def render(
    resolved: ResolvedSpec, backend: str, template_dirs: Sequence[str | Path] = ()
) -> dict[str, str]:
    """Output file name -> rendered text."""
    env = environment(template_dirs)
    spec = resolved.spec
    context = {
        "name": resolved.name,
        "family": spec.family,
        "kind": spec.kind,
        "hf_class": spec.hf_class,
        "main_output": spec.main_output,
        "backend": BACKENDS[backend],
        "config": spec.config_json(),
        "tiny": spec.tiny(),
        "num_parameters": spec.num_parameters(),
        "tiny_num_parameters": spec.shrunk().num_parameters(),
    }
    rendered = {}
    for out, template in template_names(spec.family).items():
        try:
            rendered[out] = env.get_template(template).render(context)
        except jinja2.TemplateError as exc:
            line = getattr(exc, "lineno", None)
            where = f"{template}, line {line}" if line else template
            raise jinja2.TemplateError(f"{where}: {exc}") from exc
    return rendered
