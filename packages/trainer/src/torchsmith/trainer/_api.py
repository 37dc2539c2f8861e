"""The Python entry points: list recipes, load a config, train a run."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

try:
    import fcntl
except ImportError:  # Windows: no flock, no run lock
    fcntl = None  # type: ignore[assignment]

from torchsmith.interfaces import CheckpointError, ConfigError, EventSink, TrainingEvent

from ._build import build_trainer
from ._checkpoint import CheckpointMismatchError, read_meta, step_of
from ._config import ExperimentConfig
from ._config_checks import resume_mismatches, resume_warnings
from ._config_files import apply_overrides, read_config_file, validate_config
from ._events import EventBus, JsonlSink, RichProgressSink, drop_events_after
from ._trainer import Trainer

RECIPE_SUFFIXES = (".toml", ".yaml", ".yml")


def _recipe_dir() -> Path:
    return Path(str(resources.files("torchsmith.trainer") / "recipes"))


def list_recipes() -> list[str]:
    """The names of the shipped recipes (``torchsmith train NAME`` runs one)."""
    return sorted(p.stem for p in _recipe_dir().iterdir() if p.suffix in RECIPE_SUFFIXES)


def recipe_path(name: str) -> Path:
    for suffix in RECIPE_SUFFIXES:
        path = _recipe_dir() / f"{name}{suffix}"
        if path.is_file():
            return path
    raise ConfigError(
        f"{name!r} is neither a config file nor a recipe; recipes: {', '.join(list_recipes())}"
    )


def load_config(
    source: str | Path | Mapping[str, Any] | ExperimentConfig,
    overrides: Iterable[str] = (),
) -> tuple[ExperimentConfig, Path | None]:
    """(validated config, directory its relative ``data.paths`` resolve against).

    ``source`` is a recipe name, a .toml/.yaml path, a mapping or a config; each
    ``overrides`` item is ``"section.field=value"``. Relative data paths resolve against a
    config file's folder, so a config and its corpus move together; for a shipped recipe,
    a mapping or a config, against the working directory (the directory is None).
    ``out_dir`` always resolves against the working directory.
    """
    base_dir: Path | None = None
    origin = None  # where the values came from, for an error to name
    if isinstance(source, ExperimentConfig):
        raw: Mapping[str, Any] = source.model_dump()
    elif isinstance(source, Mapping):
        raw = source
    elif Path(source).is_file():
        path = Path(source)
        raw, base_dir, origin = read_config_file(path), path.parent.resolve(), str(path)
    else:
        path = Path(source)
        if path.suffix in RECIPE_SUFFIXES or path.parent != Path("."):
            what = "is a directory, not a file" if path.is_dir() else "does not exist"
            raise ConfigError(f"config file {path} {what}")
        raw, origin = read_config_file(recipe_path(str(source))), f"recipe {source}"
    overrides = list(overrides)
    if overrides:  # --set on the command line, or an API request's overrides
        origin = f"{origin} with overrides" if origin else "overrides"
    return validate_config(apply_overrides(raw, overrides), origin), base_dir


class _JsonlOnFirstEvent:
    """A :class:`JsonlSink` opened at the first event: a run that fails while it is built
    (a bad loss, model or checkpoint) leaves nothing in its run directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sink: JsonlSink | None = None

    def emit(self, event: TrainingEvent) -> None:
        if self._sink is None:
            self._sink = JsonlSink(self.path)
        self._sink.emit(event)

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()


def _refuse_another_runs_checkpoints(out_dir: Path) -> None:
    """A fresh run must not share a checkpoint directory with an earlier one: keep-last and
    keep-best would prune across both, and ``latest`` would name the other run's step."""
    found = sorted((out_dir / "checkpoints").glob("step-*"), key=step_of)
    if found:
        raise ConfigError(
            f"out_dir: {out_dir} already holds checkpoints of an earlier run (newest: "
            f"{found[-1].name}); continue it with --resume latest, or choose another --out"
        )


def _check_out_dir(out_dir: Path) -> None:
    """Fail before any work where the run directory cannot be a directory we write."""
    existing = next(p for p in (out_dir, *out_dir.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"out_dir (--out): {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"out_dir (--out): {existing} is not writable")
    # What the run writes inside it, found now rather than at the first log or save.
    for name, kind, fits in (("checkpoints", "a directory", Path.is_dir),
                             ("metrics.jsonl", "a file", Path.is_file)):  # fmt: skip
        inside = out_dir / name
        if (inside.exists() or inside.is_symlink()) and not fits(inside):  # or links nowhere
            raise ConfigError(f"out_dir (--out): {inside} is in the way: it must be {kind}")


@contextlib.contextmanager
def _run_lock(out_dir: Path) -> Iterator[None]:
    """Hold ``OUT/.run.lock`` for the whole run, so that a second run started on the same
    directory fails at once instead of sharing its checkpoints. The kernel drops the lock
    of a killed process. Under torchrun only rank 0 takes it: the ranks share ``OUT``."""
    if fcntl is None or os.environ.get("RANK", "0") != "0":
        yield
        return
    out_dir = out_dir.absolute()
    created = [d for d in (out_dir, *out_dir.parents) if not d.exists()]  # deepest first
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = out_dir / ".run.lock"
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"out_dir (--out): another run is training in {out_dir} (it holds {lock}); "
                "wait for it to end, or choose another --out"
            ) from None
        try:
            yield
        finally:
            if created and [p.name for p in out_dir.iterdir()] == [lock.name]:
                _remove_empty(lock, created)  # a run that failed before any work
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_empty(lock: Path, created: list[Path]) -> None:
    """Remove ``lock`` and the directories ``created`` (deepest first) while they are empty:
    a run that failed before any work leaves nothing behind. Another run that started there
    meanwhile keeps its directory (rmdir refuses one that is not empty)."""
    lock.unlink(missing_ok=True)
    for directory in created:
        try:
            directory.rmdir()
        except OSError:
            return


def _of_this_run(resume: str | Path, out_dir: Path) -> bool:
    """Whether ``resume`` names a checkpoint of the run in ``out_dir`` (``latest`` does)."""
    if str(resume) == "latest":
        return True
    path, out = Path(resume).resolve(), out_dir.resolve()
    return path == out or path.is_relative_to(out / "checkpoints")


def _resume(trainer: Trainer, resume: str | Path, config: ExperimentConfig) -> None:
    """Resume ``trainer``, refusing settings that differ from the checkpoint's: a resume
    continues that run, and the optimizer's settings would quietly not apply (they are
    restored with its state), while seed, data and model changes would break exactness."""
    manager = trainer.checkpoints
    source = manager.resolve(resume) if manager is not None else Path(resume)
    meta = read_meta(source)
    saved = meta.get("config")
    current = config.model_dump(mode="json")
    problems = resume_mismatches(saved, current) if saved else []
    was, now = meta.get("data_sha256"), trainer.meta.get("data_sha256")
    if was and now and was != now:  # the same data.paths, other text in them
        problems.append(
            f"data.paths: the text there is not what the checkpoint trained on (sha256 of "
            f"its tokens {was[:12]}..., now {now[:12]}...): restore it, or start a new run"
        )
    if any(not line.startswith("model.") for line in problems):
        _refuse(source, problems)  # before loading: another optimizer's state may not load
    try:
        trainer.resume(source)  # another model's shapes fail here, listing the mismatched keys
    except CheckpointMismatchError as exc:  # a damaged file is reported as itself
        if not problems:
            raise
        _refuse(source, [*problems, f"so its weights do not fit: {exc}"])
    if problems:
        _refuse(source, problems)  # the same shapes, other settings (say, model.dropout)
    if saved and trainer.dist.is_main:
        for line in resume_warnings(saved, current):
            warnings.warn(line, stacklevel=2)
    schedule = trainer.schedule
    if trainer.step > schedule.last_step:
        capped = schedule.stop_after is not None and schedule.stop_after < schedule.max_steps
        field = "training.stop_after (--max-steps)" if capped else "training.max_steps"
        raise ConfigError(
            f"{field}: {schedule.last_step} is before step {trainer.step}, where {source} "
            "stopped; give a later step to train on"
        )


def _refuse(checkpoint: Path, problems: list[str]) -> NoReturn:
    raise ConfigError(
        f"resume: {checkpoint} was trained with other settings; a resume continues that "
        "run, so these must match (give the checkpoint's values, with --set or --seed as "
        "its run did, or start a new run with another --out):\n  " + "\n  ".join(problems)
    )


def train(
    config: str | Path | Mapping[str, Any] | ExperimentConfig,
    *,
    overrides: Iterable[str] = (),
    out_dir: str | Path | None = None,
    sinks: Iterable[EventSink] = (),
    max_steps: int | None = None,
    resume: str | Path | None = None,
    seed: int | None = None,
    progress: bool = False,
    log_jsonl: bool = True,
    run_id: str | None = None,
) -> dict[str, float]:
    """Train one run and return its final metrics; every TrainingEvent goes to ``sinks``.

    ``config``: a recipe name (see :func:`list_recipes`), a config file, a mapping
    or an ExperimentConfig. ``max_steps`` stops at that optimizer step (the LR
    schedule keeps its planned length) and always writes a checkpoint there;
    ``resume`` is ``"latest"`` or a checkpoint path. The config is validated
    before any work: a ConfigError names the field and the allowed values. Events carry
    ``run_id``. A sink that raises stops the run (an ``error`` event follows, then the
    exception propagates), which is how a caller cancels.
    """
    cfg, base_dir = load_config(config, overrides)
    updates: dict[str, Any] = {}
    if out_dir is not None:
        updates["out_dir"] = str(out_dir)
    if seed is not None:
        updates["seed"] = seed
    if max_steps is not None:
        updates["training"] = {**cfg.training.model_dump(), "stop_after": max_steps}
    if updates:
        cfg = validate_config({**cfg.model_dump(), **updates})
    out = Path(cfg.out_dir)
    _check_out_dir(out)
    if resume is not None and str(resume) != "latest" and not Path(resume).exists():
        raise CheckpointError(f"resume (--resume): {resume} does not exist")
    with _run_lock(out):
        if resume is None or not _of_this_run(resume, out):
            _refuse_another_runs_checkpoints(out)
        return _train(cfg, base_dir, sinks, resume, progress, log_jsonl, run_id)


def _train(
    cfg: ExperimentConfig,
    base_dir: Path | None,
    sinks: Iterable[EventSink],
    resume: str | Path | None,
    progress: bool,
    log_jsonl: bool,
    run_id: str | None,
) -> dict[str, float]:
    """:func:`train` once its arguments are checked: the sinks it owns, build, resume, fit."""
    log = Path(cfg.out_dir) / "metrics.jsonl"
    jsonl = _JsonlOnFirstEvent(log) if log_jsonl else None
    bar = RichProgressSink(cfg.training.stop_after or cfg.training.max_steps) if progress else None
    owned = EventBus([sink for sink in (jsonl, bar) if sink is not None])  # callers own theirs
    try:
        trainer = build_trainer(cfg, sinks=[*sinks, *owned.sinks], base_dir=base_dir)
        trainer.run_id = run_id
        if resume is not None:
            _resume(trainer, resume, cfg)
            if bar is not None:  # its rate and time left count from here, not from step 0
                bar.begin_at(trainer.step)
        if log_jsonl:  # what a resumed run logs again; a fresh run, or one resumed from
            # another run's checkpoint, drops all of an older log (of a run that never saved)
            ours = resume is not None and _of_this_run(resume, Path(cfg.out_dir))
            drop_events_after(log, trainer.step if ours else -1)
        return trainer.fit()
    finally:
        owned.close()
