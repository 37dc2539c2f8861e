"""A save killed at every point it can be killed.

Each case counts the file-system operations of one save (renames, links, directory
creations and removals, file writes), then repeats the save from the same start once per
operation, killing it just before that operation, and once in the middle of each one that
is not atomic (a file half written, a directory tree half removed). After each kill a new
``CheckpointManager`` opens the directory, as the next run does, and must find:

- nothing half-made (no ``.tmp-*`` or ``.old-*`` entry);
- ``latest`` naming the checkpoint it named before the save, or the new one, whole;
- every checkpoint it lists loading, with the contents it was saved with;
- every checkpoint that the save, completed, would have kept (in ``abandoned/`` for those a
  branch moves there);
- and the next save working.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from torchsmith.trainer import CheckpointManager, load_checkpoint
from torchsmith.trainer import _checkpoint as checkpoint_module


class Killed(BaseException):
    """SIGKILL, as far as the save can tell: no ``except Exception`` handler runs."""


@dataclass
class Killer:
    """Counts the save's operations and kills it at operation ``at`` (None: never)."""

    at: int | None = None
    count: int = 0
    log: list[str] = field(default_factory=list)

    def before(self, what: str) -> None:
        self.count += 1
        self.log.append(what)
        if self.count == self.at:
            raise Killed(what)

    def midway(self, what: str) -> bool:
        """True when the kill falls in the middle of this operation."""
        self.count += 1
        self.log.append(f"midway: {what}")
        return self.count == self.at


def _patch(monkeypatch: pytest.MonkeyPatch, killer: Killer) -> None:
    def atomic(owner: Any, name: str) -> None:
        real = getattr(owner, name)

        def op(*args: Any, **kwargs: Any) -> Any:
            killer.before(f"{name} {args[0] if args else ''}")
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, op)

    for name in ("rename", "mkdir", "unlink", "symlink_to", "write_text"):
        atomic(Path, name)
    atomic(checkpoint_module.os, "replace")
    real_rmtree, real_write = shutil.rmtree, checkpoint_module._write_synced

    def rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
        killer.before(f"rmtree {path}")
        files = sorted(p for p in Path(path).rglob("*") if p.is_file())  # none: no tree
        if files and killer.midway(f"rmtree {path}"):
            files[0].unlink()  # some of the tree removed
            raise Killed(f"midway rmtree {path}")
        real_rmtree(path, *args, **kwargs)

    def write(path: Path, writer: Callable[[Path], object]) -> None:
        killer.before(f"write {path}")
        if killer.midway(f"write {path}"):
            writer(path)
            with open(path, "r+b") as f:
                f.truncate(path.stat().st_size // 2)  # the first half on disk
            raise Killed(f"midway write {path}")
        real_write(path, writer)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    monkeypatch.setattr(checkpoint_module, "_write_synced", write)


def _state(value: float) -> dict[str, Any]:
    return {"model": {"w": torch.full((3,), value)}, "optimizer": {"value": value}}


def _value(path: Path) -> float:
    return float(load_checkpoint(path)["model"]["w"][0])


@dataclass
class Case:
    """Checkpoints saved first (step, value, loss), then the save to kill."""

    before: list[tuple[int, float, float]]
    save: tuple[int, float, float]
    keep_last: int = 2
    keep_best: int = 0
    branch_from: int | None = None
    copied_latest: bool = False  # `latest` a directory (cp -rL), not a link
    copy_alone: bool = False  # and its step's own directory gone (a run shipped as latest/)

    def manager(self, directory: Path) -> CheckpointManager:
        return CheckpointManager(
            directory, keep_last=self.keep_last, keep_best=self.keep_best, metric="loss"
        )

    def prepare(self, directory: Path) -> CheckpointManager:
        manager = self.manager(directory)
        for step, value, loss in self.before:
            manager.save(_state(value), step=step, metrics={"loss": loss})
        if self.copied_latest:
            latest = directory / "latest"
            target = latest.resolve()
            latest.unlink()
            shutil.copytree(target, latest)
            if self.copy_alone:
                shutil.rmtree(target)
        manager = self.manager(directory)
        if self.branch_from is not None:
            manager.branch_from(self.branch_from)
        return manager

    def run_save(self, manager: CheckpointManager) -> None:
        step, value, loss = self.save
        manager.save(_state(value), step=step, metrics={"loss": loss})


CASES = {
    "the first save": Case(before=[], save=(1, 1.0, 0.5)),
    "a save that prunes": Case(
        before=[(1, 1.0, 0.1), (2, 2.0, 0.5), (3, 3.0, 0.4)],
        save=(4, 4.0, 0.3),
        keep_best=1,
    ),
    "the same step again": Case(before=[(1, 1.0, 0.5), (2, 2.0, 0.5)], save=(2, 20.0, 0.5)),
    "a branch's first save": Case(
        before=[(1, 1.0, 0.5), (2, 2.0, 0.5), (3, 3.0, 0.5)],
        save=(2, 20.0, 0.5),
        keep_last=3,
        branch_from=1,
    ),
    "over a copied latest": Case(before=[(1, 1.0, 0.5), (2, 2.0, 0.5)], save=(3, 3.0, 0.5)),
}
CASES["over a copied latest"].copied_latest = True
CASES["over a copied latest, its step's only copy"] = Case(
    before=[(1, 1.0, 0.5), (2, 2.0, 0.5)], save=(3, 3.0, 0.5), keep_last=3,
    copied_latest=True, copy_alone=True,
)  # fmt: skip


def _contents(directory: Path) -> dict[str, float]:
    """Each checkpoint's value, by name (those under abandoned/ too)."""
    found = {p.name: _value(p) for p in directory.glob("step-*")}
    latest = directory / "latest"
    if latest.is_dir() and not latest.is_symlink():  # a copied `latest` holds its step too
        step = json.loads((latest / "meta.json").read_text())["step"]
        found.setdefault(f"step-{step:08d}", _value(latest))
    found |= {f"abandoned/{p.name}": _value(p) for p in directory.glob("abandoned/step-*")}
    return found


def _complete(case: Case, directory: Path) -> dict[str, float]:
    """What the save leaves when nothing kills it."""
    case.run_save(case.prepare(directory))
    return _contents(directory)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_save_killed_anywhere_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    case = CASES[name]
    counted = Killer()
    manager = case.prepare(tmp_path / "count")
    before = _contents(tmp_path / "count")
    latest_before = manager.latest()
    old_value = None if latest_before is None else _value(latest_before)
    branched = before.get(f"step-{case.branch_from or 0:08d}")
    _patch(monkeypatch, counted)
    case.run_save(manager)
    monkeypatch.undo()
    after = _complete(case, tmp_path / "complete")
    must_keep = {k: v for k, v in after.items() if before.get(k.removeprefix("abandoned/")) == v}
    assert counted.count > 5, counted.log

    for at in range(1, counted.count + 1):
        directory = tmp_path / f"kill-{at}"
        manager = case.prepare(directory)
        killer = Killer(at)
        _patch(monkeypatch, killer)
        with pytest.raises(Killed):
            case.run_save(manager)
        monkeypatch.undo()
        where = f"killed at {killer.log[-1]} (operation {at})"

        reopened = case.manager(directory)  # the next run
        left = [p.name for p in directory.glob("*") if p.name.startswith((".tmp-", ".old-"))]
        assert not left, where
        latest = reopened.latest()
        # Before the save, a branch's `latest` names the step it resumed from.
        allowed = {old_value, case.save[1], *([branched] if case.branch_from else [])}
        assert (None if latest is None else _value(latest)) in allowed, where
        assert latest is not None or old_value is None, where
        contents = _contents(directory)  # every listed checkpoint loads
        for key, value in must_keep.items():
            present = contents.get(key, contents.get(key.removeprefix("abandoned/")))
            assert present == value, f"{where}: {key} lost"
        reopened.save(_state(99.0), step=99, metrics={"loss": 0.0})
        assert reopened.latest() == directory / "step-00000099", where
