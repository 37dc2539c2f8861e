"""Atomic checkpoint directories: ``model.safetensors``, ``state.pt`` and ``meta.json``.

A save writes a hidden temporary directory, fsyncs every file and the directory,
then renames it into place and repoints the ``latest`` symlink with ``os.replace``.
A process killed at any moment leaves the previous checkpoint untouched; a
half-written ``.tmp-*`` directory is removed by the next manager, and a step being
replaced (moved to ``.old-step-*`` for a moment) is put back if the new copy never landed.

    OUT/checkpoints/step-00000100/{model.safetensors, state.pt, meta.json}
    OUT/checkpoints/latest -> step-00000100
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import pickle
import re
import shutil
import stat
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.serialization import get_unsafe_globals_in_checkpoint

from torchsmith.interfaces import CheckpointError, fsync_directory

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

MODEL_FILE, STATE_FILE, META_FILE = "model.safetensors", "state.pt", "meta.json"
LATEST, ABANDONED = "latest", "abandoned"


class CheckpointManager:
    """Saves, finds, loads and prunes the checkpoints under ``directory``.

    Keeps the ``keep_last`` newest checkpoints plus the ``keep_best`` best by
    ``metric`` (``mode`` "min" or "max"), and always the one ``latest`` names.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        keep_last: int = 2,
        keep_best: int = 0,
        metric: str = "val_loss",
        mode: str = "min",
        recover: bool = True,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode: 'min' or 'max', not {mode!r}")
        if keep_last < 1 or keep_best < 0:
            raise ValueError(
                f"keep_last: at least 1 ({keep_last}), keep_best: at least 0 ({keep_best})"
            )
        self.directory = Path(directory)
        self.keep_last, self.keep_best = keep_last, keep_best
        self.metric, self.mode = metric, mode
        self._branch_step: int | None = None  # see branch_from()
        if recover and self.directory.is_dir():  # under DDP, rank 0's alone: renames race
            try:
                with self._locked():
                    self._recover()
            except OSError as exc:
                raise CheckpointError(
                    f"cannot open {self.directory} for checkpoints: {exc}"
                ) from exc

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold ``.lock`` in the directory: a save and another process's recovery (which
        deletes ``.tmp-*``) never interleave. The kernel drops the lock of a killed process."""
        if fcntl is None:  # Windows: no flock
            yield
            return
        with open(self.directory / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _recover(self) -> None:
        """Undo what a process killed mid-save left: a temp directory or link, or a
        moved-away step."""
        for stale in self.directory.glob(".tmp-*"):
            if stale.is_symlink():  # a `latest` link made but not yet moved into place
                stale.unlink()
            else:
                shutil.rmtree(stale, ignore_errors=True)
        for old in self.directory.glob(".old-step-*"):
            final = self.directory / old.name.removeprefix(".old-").rsplit("-", 1)[0]
            if final.exists():  # the new copy made it into place: the old one can go
                shutil.rmtree(old, ignore_errors=True)
            else:  # killed between the two renames: the old copy is the checkpoint
                old.rename(final)
        # Killed between placing a step and linking it, `latest` names the step before;
        # killed as a branch's first save shelved later steps, it names a shelved one.
        # (A copied `latest` directory is left as it is; the next save files it under its
        # step, or deletes it when a step directory holds that step already.)
        # Only ever forward, or off a step that is gone: a placed step without meta.json was
        # damaged after its save, and `latest` keeps naming it, so that resuming says so
        # rather than going back to an older step without a word.
        found, latest = self.all(), self.directory / LATEST
        linked = self.directory / os.readlink(latest) if latest.is_symlink() else None
        newest = step_of(found[-1]) if found else -1
        behind = linked is None or not linked.exists() or step_of(linked) < newest
        if found and not (latest.is_dir() and linked is None) and behind:
            self._point_latest(found[-1].name)
        elif not found and linked is not None and not latest.exists():  # a link to nothing
            latest.unlink()

    # ------------------------------------------------------------ save

    def branch_from(self, step: int) -> None:
        """Training goes on from ``step`` (a resume): the first save moves the checkpoints of
        later steps, those of the run this one branched off, to ``abandoned/``, out of the
        way of keep-last, keep-best and ``latest``, and deletes none."""
        self._branch_step = step

    def save(self, state: Mapping[str, Any], *, step: int, metrics: Mapping[str, float]) -> Path:
        """Write ``state`` as the checkpoint of ``step``, atomically, then prune.

        ``state["model"]`` holds the weights (tensors, to safetensors); the rest is what
        ``torch.load(weights_only=True)`` reads back, such as ``optimizer.state_dict()``,
        never the optimizer itself. ``metrics``: numbers (a numpy scalar or one-element
        tensor too), ranked by keep-best; a NaN is stored as null and never ranks. The
        directory's lock is held throughout, so another process's recovery never
        interleaves.
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"cannot create {self.directory}: {exc}") from exc
        with self._locked():
            return self._save(state, step=step, metrics=metrics)

    def _save(self, state: Mapping[str, Any], *, step: int, metrics: Mapping[str, float]) -> Path:
        final = self.directory / f"step-{step:08d}"
        tmp = self.directory / f".tmp-step-{step:08d}-{os.getpid()}"
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            self._write(tmp, state, step, metrics)
        # A full disk or a permission: OSError, or safetensors' and torch.save's own errors.
        except Exception as exc:  # the last good checkpoint stays; nothing is left behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(f"cannot write checkpoint {final}: {exc}") from exc
        if self._branch_step is not None:
            try:
                self._abandon_after(self._branch_step)
            except OSError as exc:
                raise CheckpointError(
                    f"cannot move the checkpoints after step {self._branch_step} to "
                    f"{self.directory / ABANDONED}: {exc}"
                ) from exc
            self._branch_step = None
        try:
            self._put_in_place(tmp, final)
        except OSError as exc:
            if tmp.exists():
                raise CheckpointError(
                    f"wrote {tmp} but could not move it to {final}: {exc}"
                ) from exc
            latest = self.directory / LATEST  # in place, but not linked (no symlinks here?)
            raise CheckpointError(
                f"saved {final}, but could not point {latest} at it: {exc}"
            ) from exc
        try:
            self._prune()
        except (OSError, CheckpointError) as exc:  # the checkpoint is in place; older ones stay
            raise CheckpointError(f"saved {final}, but pruning older ones failed: {exc}") from exc
        return final

    def _put_in_place(self, tmp: Path, final: Path) -> None:
        """Rename ``tmp`` to ``final`` (replacing a copy of the same step) and link it."""
        old = None
        if final.exists():  # saving the same step again (e.g. a resumed run's last step)
            # Two renames, and a kill between them leaves the old copy under a name that
            # _recover() puts back; it is deleted only once the new copy is in place.
            old = self.directory / f".old-{final.name}-{os.getpid()}"
            final.rename(old)
        tmp.rename(final)
        self._point_latest(final.name)
        fsync_directory(self.directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    @staticmethod
    def _write(
        tmp: Path, state: Mapping[str, Any], step: int, metrics: Mapping[str, float]
    ) -> None:
        rest = {k: v for k, v in state.items() if k not in ("model", "meta")}
        # A NaN metric is written as null: bare NaN is not JSON, and it ranks as nothing.
        values = {k: _number(k, v) for k, v in metrics.items()}
        finite = {k: v if math.isfinite(v) else None for k, v in values.items()}
        meta = {**dict(state.get("meta", {})), "step": step, "metrics": finite}
        text = json.dumps(meta, indent=2, allow_nan=False)
        _write_synced(tmp / STATE_FILE, lambda p: torch.save(rest, p))
        _refuse_objects(tmp / STATE_FILE, rest)  # before a loadless checkpoint prunes good ones
        _write_synced(tmp / MODEL_FILE, lambda p: save_file(_unshared(state["model"]), str(p)))
        _write_synced(tmp / META_FILE, lambda p: p.write_text(text))
        # safetensors creates its file 0600; give it the mode the umask gave its siblings,
        # so whoever may read the state and meta may read the weights too.
        with contextlib.suppress(OSError):  # a file system without modes: the save stands
            os.chmod(tmp / MODEL_FILE, stat.S_IMODE((tmp / META_FILE).stat().st_mode))
        fsync_directory(tmp)

    def _abandon_after(self, step: int) -> None:
        # Damaged later steps too (all() skips a step without meta.json): `latest` may name one.
        steps = [p for p in self.directory.glob("step-*") if p.is_dir()]
        later = sorted((p for p in steps if step_of(p) > step), key=step_of)
        if not later:
            return
        kept = [p for p in self.all() if step_of(p) <= step]
        if kept:  # `latest` names a kept step before any is shelved: it never dangles
            self._point_latest(kept[-1].name)
        elif (self.directory / LATEST).is_symlink():  # none kept: no `latest` until the save
            (self.directory / LATEST).unlink()
        shelf = self.directory / ABANDONED
        shelf.mkdir(exist_ok=True)
        for path in later:
            target = shelf / path.name
            n = 1
            while target.exists():  # abandoned twice over (a second branch off the same run)
                target, n = shelf / f"{path.name}.{n}", n + 1
            path.rename(target)
        warnings.warn(
            f"this run resumed from before {later[0].name}: the {len(later)} later "
            f"checkpoint(s), of the run it branched off, moved to {shelf}",
            stacklevel=2,
        )

    def _point_latest(self, name: str) -> None:
        link, latest = self.directory / f".tmp-latest-{os.getpid()}", self.directory / LATEST
        link.unlink(missing_ok=True)
        link.symlink_to(name, target_is_directory=True)
        doomed = None
        if latest.is_dir() and not latest.is_symlink():  # a copy made with cp -rL, an unzip
            doomed = self._take_in_copy(latest)
        os.replace(link, latest)
        if doomed is not None:
            shutil.rmtree(doomed)

    def _take_in_copy(self, latest: Path) -> Path | None:
        """Move a copied ``latest`` directory out of the link's way: to the ``step-*`` name
        of the step it holds when no directory holds that step (a run shipped as its newest
        checkpoint alone), so that keep-last and keep-best treat it as any other; else,
        a duplicate, to a ``.tmp-*`` to delete (None: nothing to delete).

        Either way ``latest`` is missing only between two renames: killed then, recovery
        links the newest step; killed mid-delete, it removes the ``.tmp-*``."""
        try:
            step = read_meta(latest).get("step")
        except CheckpointError:  # no readable meta.json: no step to file it under
            step = None
        if isinstance(step, int) and not isinstance(step, bool) and step >= 0:
            own = self.directory / f"step-{step:08d}"
            if not own.exists():
                latest.rename(own)
                return None
        doomed = self.directory / f".tmp-latest-copy-{os.getpid()}"
        latest.rename(doomed)
        return doomed

    def _prune(self) -> None:
        keep = set(self.all()[-self.keep_last :])
        if self.keep_best:  # reads every checkpoint's meta.json
            keep |= set(self.best()[: self.keep_best])
        latest = self.latest()
        for path in self.all():
            if path not in keep and path != latest:
                # Renamed first: a kill mid-delete leaves a .tmp-* that _recover removes,
                # never a step directory that lists as a checkpoint with files missing.
                doomed = self.directory / f".tmp-pruned-{path.name}-{os.getpid()}"
                path.rename(doomed)
                shutil.rmtree(doomed, ignore_errors=True)

    # ------------------------------------------------------------ find

    def all(self) -> list[Path]:
        """Every complete checkpoint, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.glob("step-*") if (p / META_FILE).is_file()]
        return sorted(found, key=step_of)  # by number: step-100000000 after step-99999999

    def best(self) -> list[Path]:
        """Checkpoints holding a finite ``metric``, best first (the older first on a tie).
        One whose ``meta.json`` cannot be read is not ranked, with a warning."""
        scored = []
        for path in self.all():
            try:
                value = read_meta(path).get("metrics", {}).get(self.metric)
            except CheckpointError as exc:  # damaged after its save: it must not stop saves
                warnings.warn(f"{exc}; it is not ranked by {self.metric}", stacklevel=2)
                continue
            if _finite(value):
                scored.append((value if self.mode == "min" else -value, step_of(path), path))
        return [path for *_, path in sorted(scored)]

    def latest(self) -> Path | None:
        """The checkpoint ``latest`` names (a copied ``latest`` directory is itself one), else
        the newest, or None when there is none."""
        link = self.directory / LATEST
        if link.is_dir():
            return self.directory / os.readlink(link) if link.is_symlink() else link
        found = self.all()
        return found[-1] if found else None

    # ------------------------------------------------------------ load

    def resolve(self, path: str | Path | None) -> Path:
        """The checkpoint directory for ``path`` ("latest", a run directory, or a checkpoint)."""
        if path is None or str(path) == LATEST:
            found = self.latest()
            if found is None:
                raise CheckpointError(f"no checkpoint to resume under {self.directory}")
            return found
        candidate = Path(path)
        if (candidate / "checkpoints" / LATEST).is_dir():
            candidate = candidate / "checkpoints" / LATEST
        if not (candidate / MODEL_FILE).is_file() or not (candidate / STATE_FILE).is_file():
            raise CheckpointError(
                f"{candidate} is not a checkpoint: it must hold {MODEL_FILE} and {STATE_FILE}"
            )
        return candidate

    def load(self, path: Path | None = None) -> dict[str, Any] | None:
        """The state saved at ``path`` (default: the latest), or None when there is none."""
        if path is None and self.latest() is None:
            return None
        return load_checkpoint(self.resolve(path))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """``{"model": tensors, "meta": {...}, **training state}``; never unpickles objects.

    A file that is missing, damaged or not what torchsmith writes is a CheckpointError
    naming it.
    """
    try:
        model = load_file(str(path / MODEL_FILE))
    except Exception as exc:  # safetensors raises its own errors, OSError, or ValueError
        raise CheckpointError(f"cannot read {path / MODEL_FILE}: {exc}") from exc
    state = _load_state(path / STATE_FILE)
    meta = read_meta(path)
    return {**state, "model": model, "meta": meta}


def _load_state(file: Path) -> dict[str, Any]:
    try:
        # On the CPU: optimizer.load_state_dict and load_state_dict move tensors to their
        # parameters' devices, and a CUDA-saved run must load where CUDA is absent too.
        state = torch.load(file, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        # torch's message advises weights_only=False, or allowlisting the global: never that.
        # It names a refused global as "Unsupported global: GLOBAL eval was not an allowed
        # global", or for a module it blocks (os, posix) "unsupported GLOBAL posix.system".
        refused = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if refused is None:  # not a refused object: bytes that are no pickle at all
            found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(exc))
            reason = found.group(1).strip() if found else "not a weights-only pickle"
            raise CheckpointError(
                f"cannot read {file}: it is damaged, not a file torch.save wrote ({reason})"
            ) from exc
        raise CheckpointError(
            f"refusing {file}: it holds Python objects that a weights-only load does not "
            f"build (the global {refused.group(1)}); torchsmith never writes such a file, "
            "so do not load it another way unless you trust where it came from"
        ) from exc
    except Exception as exc:  # truncated (EOFError), garbage (KeyError), unreadable (OSError)
        raise CheckpointError(f"cannot read {file}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{file} holds a {type(state).__name__}, not a training state")
    return state


def read_meta(path: Path) -> dict[str, Any]:
    file = path / META_FILE
    try:
        meta = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {file}: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("config", {}), dict):
        raise CheckpointError(f"{file} is not a torchsmith checkpoint's metadata")
    metrics = meta.get("metrics", {})
    if not isinstance(metrics, dict):
        raise CheckpointError(f"{file}: 'metrics' is a {type(metrics).__name__}, not a mapping")
    return meta


class CheckpointMismatchError(CheckpointError):
    """A checkpoint's tensors do not fit the model: the message lists every mismatched key."""


def load_model_state(model: nn.Module, tensors: Mapping[str, torch.Tensor], source: Path) -> None:
    """Copy ``tensors`` into ``model``, or a CheckpointMismatchError listing every
    mismatched key."""
    expected = model.state_dict()
    missing = sorted(expected.keys() - tensors.keys())
    unexpected = sorted(tensors.keys() - expected.keys())
    shapes = sorted(
        f"{k}: checkpoint {tuple(tensors[k].shape)} != model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    )
    # Another float width converts without loss of meaning; integers for floats do not.
    kinds = sorted(
        f"{k}: checkpoint {tensors[k].dtype} for model {v.dtype}"
        for k, v in expected.items()
        if k in tensors and _kind(tensors[k]) != _kind(v)
    )
    if missing or unexpected or shapes or kinds:
        parts = [f"checkpoint {source} does not match the model:"]
        parts += [f"  missing keys: {', '.join(missing)}"] if missing else []
        parts += [f"  unexpected keys: {', '.join(unexpected)}"] if unexpected else []
        parts += [f"  shape mismatches: {'; '.join(shapes)}"] if shapes else []
        parts += [f"  dtype mismatches: {'; '.join(kinds)}"] if kinds else []
        raise CheckpointMismatchError("\n".join(parts))
    model.load_state_dict(tensors, strict=True)


def _kind(tensor: torch.Tensor) -> str:
    """bool, integer, floating or complex: what a dtype means, whatever its width."""
    if tensor.dtype == torch.bool:
        return "bool"
    return "complex" if tensor.is_complex() else "float" if tensor.is_floating_point() else "int"


def _unshared(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, cloning any that share storage (safetensors refuses aliases)."""
    seen: set[int] = set()
    result = {}
    for name, tensor in tensors.items():
        t = tensor.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        result[name] = t.clone() if ptr in seen else t
        seen.add(ptr)
    return result


def step_of(path: Path) -> int:
    """The step a ``step-NNNNNNNN`` directory holds (-1 for a name that is not a number)."""
    digits = path.name.removeprefix("step-")
    return int(digits) if digits.isdigit() else -1


def _number(name: str, value: object) -> float:
    """A metric's value as a float: a Python or numpy number, or a one-element real (not
    boolean) tensor or array."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        if not (value.is_complex() or value.dtype == torch.bool):
            return float(value)
    elif isinstance(value, np.ndarray) and value.size == 1:
        if value.dtype.kind in "iuf":
            return float(value.item())
    elif isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_):
        return float(value)
    raise TypeError(f"metrics[{name!r}] must be a number, not {type(value).__name__}")


def _refuse_objects(file: Path, state: Mapping[str, Any]) -> None:
    """Raise if ``file`` holds objects ``torch.load(weights_only=True)`` would refuse to
    read, naming them and the keys of ``state`` that hold them (read from the pickle's
    opcodes, no tensor loaded)."""
    objects = get_unsafe_globals_in_checkpoint(file)
    if objects:
        plain = (torch.Tensor, numbers.Number, str, bytes, dict, list, tuple, type(None))
        keys = [k for k, v in state.items() if not isinstance(v, plain)]
        raise TypeError(
            f"state {keys or list(state)} holds Python objects that a checkpoint never loads "
            f"({', '.join(objects)}); save state_dict()s, tensors, numbers and strings"
        )


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _write_synced(path: Path, write: Callable[[Path], object]) -> None:
    write(path)
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
