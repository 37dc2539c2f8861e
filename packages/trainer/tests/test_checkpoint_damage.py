"""Checkpoints on a file system that misbehaves: a damaged old meta.json, no symlinks."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from torchsmith.interfaces import CheckpointError
from torchsmith.trainer import CheckpointManager, load_checkpoint


def _state(value: float) -> dict:
    return {
        "model": {"w": torch.full((2, 2), value)},
        "optimizer": {},
        "loop": {"step": int(value)},
    }


@pytest.mark.parametrize("keep_best", [0, 1])
def test_an_old_checkpoint_whose_meta_json_was_damaged_stops_no_save(
    tmp_path: Path, keep_best: int
) -> None:
    manager = CheckpointManager(tmp_path, keep_last=2, keep_best=keep_best, metric="v")
    for step in (10, 20):
        manager.save(_state(float(step)), step=step, metrics={"v": 1.0 / step})
    (tmp_path / "step-00000010" / "meta.json").write_text("")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in (30, 40):
            manager.save(_state(float(step)), step=step, metrics={"v": 1.0 / step})
    assert [p.name for p in manager.all()] == ["step-00000030", "step-00000040"]
    if keep_best:  # ranking read it once, before keep-last pruned it
        assert any("step-00000010/meta.json" in str(w.message) for w in caught)


def test_a_file_system_without_symlinks_says_the_step_was_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(self: Path, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(1, "Operation not permitted", str(self))

    CheckpointManager(tmp_path).save(_state(1.0), step=1, metrics={})
    (tmp_path / "latest").unlink()  # recovery will try to link it
    monkeypatch.setattr(Path, "symlink_to", refused)
    with pytest.raises(CheckpointError, match=r"cannot open .* for checkpoints: .*not permitted"):
        CheckpointManager(tmp_path)
    manager = CheckpointManager(tmp_path, recover=False)
    with pytest.raises(
        CheckpointError, match=r"saved .*step-00000002, but could not point .*latest at it"
    ):
        manager.save(_state(2.0), step=2, metrics={})
    assert load_checkpoint(tmp_path / "step-00000002")["loop"]["step"] == 2
