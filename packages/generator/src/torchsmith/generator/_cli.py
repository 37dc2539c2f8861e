"""`torchsmith generate`: the command-line face of generate().

torchsmith generate PRESET_OR_SPEC --out DIR [--set key=value ...] [--backend cpu|cuda|mps]
                    [--force] [--no-validate] [--checks parse,lint,...] [--templates DIR]
torchsmith generate --list

Exit codes: 0 written; 1 a check of the generated code failed (nothing written); 2 bad
arguments, a template that fails to render, or an output directory that cannot be written
(files there without --force).
"""

from __future__ import annotations

import argparse
import sys

from torchsmith.interfaces import GeneratedArtifact, TorchsmithError

from ._errors import GenerationError
from ._generate import generate, list_backends, list_families, list_presets
from ._presets import FAMILIES
from ._render import BACKENDS
from ._spec_loading import resolve_spec
from ._validate import CHECKS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchsmith generate",
        description="Generate a readable PyTorch model with its tests and benchmark.",
    )
    parser.add_argument("spec", nargs="?", help="preset name or TOML/YAML/JSON spec file")
    parser.add_argument("--out", help="output directory (created; files never land elsewhere)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec field, e.g. --set n_layer=6 or --set text_config.hidden_size=256",
    )
    parser.add_argument("--backend", choices=list_backends(), default="cpu")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.add_argument("--no-validate", action="store_true", help="skip every check (faster)")
    parser.add_argument(
        "--checks", help=f"comma-separated checks to run (default all: {','.join(CHECKS)})"
    )
    parser.add_argument(
        "--templates",
        action="append",
        default=[],
        metavar="DIR",
        help="a template directory whose files override the built-in ones (repeatable)",
    )
    parser.add_argument("--list", action="store_true", help="list families, presets, backends")
    return parser


def _listing() -> str:
    lines = ["families:"]
    lines += [f"  {name:<8} {spec.kind} ({spec.hf_class})" for name, spec in FAMILIES.items()]
    lines.append("presets:")
    for name, family in list_presets().items():
        count = resolve_spec(name).spec.num_parameters()
        lines.append(f"  {name:<24} {family:<6} {count / 1e6:8.1f}M parameters")
    lines.append("backends:")
    lines += [f"  {name:<5} {backend.note}" for name, backend in BACKENDS.items()]
    return "\n".join(lines)


def _summary(artifact: GeneratedArtifact) -> str:
    lines = [f"{artifact.name} ({artifact.family}, {artifact.backend}) -> {artifact.directory}"]
    lines += [f"  {f.path:<15} {f.bytes:>7} bytes" for f in artifact.files]
    lines += [f"  check {name:<11} {result}" for name, result in artifact.validation.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        print(_listing())
        print(f"\n{len(list_families())} families, {len(list_presets())} presets")
        return 0
    if not args.spec or not args.out:
        print("torchsmith generate: error: give PRESET_OR_SPEC and --out DIR", file=sys.stderr)
        return 2
    validate: bool | list[str] = not args.no_validate
    if args.checks is not None:
        checks = [name.strip() for name in args.checks.split(",") if name.strip()]
        if args.no_validate or not checks:  # either would silently run no check at all
            why = "with --no-validate" if args.no_validate else "naming no check"
            print(f"torchsmith generate: error: --checks {args.checks!r} {why}", file=sys.stderr)
            return 2
        validate = checks
    try:
        artifact = generate(
            args.spec,
            args.out,
            overrides=args.overrides,
            backend=args.backend,
            force=args.force,
            validate=validate,
            template_dirs=args.templates,
        )
    except GenerationError as exc:
        if exc.artifact is not None:
            print(_summary(exc.artifact), file=sys.stderr)
        print(f"torchsmith generate: error: {exc}", file=sys.stderr)
        return 1 if exc.artifact is not None else 2  # 1: a check failed; 2: nothing checked
    except TorchsmithError as exc:
        print(f"torchsmith generate: error: {exc}", file=sys.stderr)
        return 2
    print(_summary(artifact))
    return 0
