"""generate(): resolve the spec, render into a staging directory, validate, publish.

Nothing reaches ``out_dir`` until every check passed: files are rendered into a hidden
staging directory next to it, fsynced, validated there, then moved in one rename each.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from torchsmith.interfaces import ConfigError, GeneratedArtifact, GeneratedFile, fsync_directory

from ._errors import GenerationError
from ._presets import FAMILIES, PRESETS
from ._render import BACKENDS, OUTPUTS, render, template_names, template_source
from ._spec_loading import Overrides, resolve_spec
from ._validate import CHECKS, CheckFailed, Validator

SpecSource = str | os.PathLike[str] | Mapping[str, Any]


def list_families() -> list[str]:
    """Family names: bert, gpt2, llama, t5, vit, clip."""
    return list(FAMILIES)


def list_presets() -> dict[str, str]:
    """Preset name -> its family."""
    return {name: str(data["family"]) for name, data in PRESETS.items()}


def list_backends() -> list[str]:
    return list(BACKENDS)


def generate(
    spec: SpecSource,
    out_dir: str | os.PathLike[str],
    *,
    overrides: Overrides = (),
    backend: str = "cpu",
    force: bool = False,
    validate: bool | Collection[str] = True,
    template_dirs: Sequence[str | os.PathLike[str]] = (),
) -> GeneratedArtifact:
    """Write model.py, config.json, test_model.py, bench_model.py and README.md to out_dir.

    ``spec`` is a preset name, a TOML/YAML/JSON spec file (a transformers config.json
    works) or a dict; ``overrides`` are ``"key=value"`` strings or a dict (dotted keys
    reach nested configs). Raises ConfigError for a bad spec or option and
    GenerationError when rendering, validation or writing fails; then out_dir is untouched.
    ``validate`` is True (every check in CHECKS), False, or the names of the checks to run.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r}: allowed are {', '.join(BACKENDS)}")
    source = spec if isinstance(spec, Mapping) else os.fspath(spec)
    resolved = resolve_spec(source, overrides)
    out = Path(out_dir).resolve()
    _check_destination(out, force)
    templates = template_names(resolved.family)
    try:
        rendered = render(resolved, backend, [Path(d) for d in template_dirs])
    except (jinja2.TemplateError, TypeError) as exc:
        raise GenerationError(f"rendering {resolved.name} failed: {exc}") from exc

    made = _make_parents(out.parent)  # removed again if nothing is published
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    published = False
    try:
        for filename, text in rendered.items():
            _write(staging / filename, text)
        artifact = GeneratedArtifact(
            name=resolved.name,
            family=resolved.family,
            backend=backend,  # type: ignore[arg-type]  # checked against BACKENDS above
            directory=str(out),
            files=[_describe(staging / filename) for filename in rendered],
            spec={"name": resolved.name, "family": resolved.family}
            | resolved.spec.model_dump(mode="json"),
        )
        if validate:
            checks = CHECKS if validate is True else tuple(validate)
            _validate(artifact, staging, resolved.spec, templates, checks, template_dirs)
        else:
            artifact.validation = {check: "skipped: validation turned off" for check in CHECKS}
        _publish(staging, out, list(rendered))
        published = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not published:
            _remove_empty(made)
    return artifact


def _validate(
    artifact: GeneratedArtifact,
    staging: Path,
    spec: Any,
    templates: dict[str, str],
    checks: Collection[str],
    template_dirs: Sequence[str | os.PathLike[str]],
) -> None:
    validator = Validator(staging, spec, templates, checks, template_source(template_dirs))
    try:
        validator.run()
    except CheckFailed as exc:
        artifact.validation = {**validator.results, exc.check: f"failed: {exc.detail}"}
        message = str(exc).replace(str(staging), str(Path(artifact.directory)))
        raise GenerationError(
            f"generated {artifact.name} did not validate, nothing was written: {message}",
            artifact,
        ) from exc
    artifact.validation = validator.results
    artifact.validated = True


def _check_destination(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise GenerationError(f"output {str(out)!r} exists and is not a directory")
    for name in OUTPUTS:  # each is replaced by one rename: it must be a plain file, if any
        target = out / name
        if target.is_symlink() or (target.exists() and not target.is_file()):
            what = "a symbolic link" if target.is_symlink() else "not a file"
            raise GenerationError(f"refusing to replace {str(target)!r}: it is {what}")
    existing = [name for name in OUTPUTS if (out / name).exists()]
    if existing and not force:
        raise GenerationError(
            f"output {str(out)!r} already has {', '.join(existing)}; "
            "pass --force (force=True) to overwrite"
        )


def _write(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _describe(path: Path) -> GeneratedFile:
    data = path.read_bytes()
    return GeneratedFile(path=path.name, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))


def _publish(staging: Path, out: Path, filenames: list[str]) -> None:
    """Move each staged file into ``out`` (one atomic rename each), checking it stays inside
    and replaces no link or directory (a link's target would be written instead)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GenerationError(f"cannot create output {str(out)!r}: {exc}") from exc
    _check_destination(out, force=True)  # again: the directory may have changed meanwhile
    targets = {filename: out / filename for filename in filenames}
    for filename, target in targets.items():  # all checked before any is moved
        if target.resolve().parent != out:
            raise GenerationError(f"refusing to write {filename!r} outside {str(out)!r}")
    try:
        for filename, target in targets.items():
            os.replace(staging / filename, target)
    except OSError as exc:
        raise GenerationError(f"writing {str(out)!r} failed: {exc}") from exc
    fsync_directory(out)


def _make_parents(directory: Path) -> list[Path]:
    """Create ``directory`` and its missing parents; the ones created, innermost first."""
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a parent is a file, or cannot be written
        raise GenerationError(f"cannot create {str(directory)!r}: {exc}") from exc
    return missing


def _remove_empty(directories: list[Path]) -> None:
    for directory in directories:  # innermost first; one another process filled stays
        try:
            directory.rmdir()
        except OSError:
            return
