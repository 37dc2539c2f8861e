"""Checkpoints: atomic directories, latest link, pruning, safe loading, clear mismatches."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from torchsmith.interfaces import Checkpointer, CheckpointError
from torchsmith.trainer import CheckpointManager, load_checkpoint, load_model_state


def _state(value: float) -> dict:
    return {
        "model": {"w": torch.full((2, 2), value), "b": torch.zeros(2)},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "betas": (0.9, 0.99)}]},
        "loop": {"step": int(value)},
        "meta": {"config": {"name": "t"}},
    }


def test_save_writes_the_three_files_and_points_latest(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    assert isinstance(manager, Checkpointer)
    path = manager.save(_state(1.0), step=7, metrics={"val_loss": 0.5})
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "model.safetensors", "state.pt"]
    assert (tmp_path / "latest").resolve() == path.resolve()
    assert torch.equal(
        load_file(str(tmp_path / "latest" / "model.safetensors"))["w"], torch.full((2, 2), 1.0)
    )
    meta = json.loads((path / "meta.json").read_text())
    assert meta["step"] == 7 and meta["metrics"] == {"val_loss": 0.5}
    assert meta["config"] == {"name": "t"}
    loaded = manager.load()
    assert loaded is not None and loaded["loop"]["step"] == 1
    assert loaded["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.99)


def test_state_file_loads_with_weights_only(tmp_path: Path) -> None:
    path = CheckpointManager(tmp_path).save(_state(2.0), step=1, metrics={})
    torch.load(path / "state.pt", weights_only=True)  # raises if anything needs unpickling


def test_keep_last_and_keep_best(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=2, keep_best=1, metric="acc", mode="max")
    scores = {1: 0.2, 2: 0.9, 3: 0.5, 4: 0.4, 5: 0.3}
    for step, acc in scores.items():
        manager.save(_state(float(step)), step=step, metrics={"acc": acc})
    kept = [p.name for p in manager.all()]
    assert kept == ["step-00000002", "step-00000004", "step-00000005"]  # best + last two
    assert manager.latest() == tmp_path / "step-00000005"


def test_a_killed_save_leaves_the_last_checkpoint_intact(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    good = manager.save(_state(1.0), step=1, metrics={})
    # What a process killed mid-save leaves behind: a partial hidden temp directory.
    partial = tmp_path / ".tmp-step-00000002-999"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\x00garbage")
    assert manager.latest() == good
    CheckpointManager(tmp_path)  # the next run's manager sweeps it away
    assert not partial.exists()
    assert torch.equal(load_checkpoint(good)["model"]["w"], torch.full((2, 2), 1.0))


def test_saving_the_same_step_again_replaces_it(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    manager.save(_state(1.0), step=3, metrics={})
    manager.save(_state(5.0), step=3, metrics={})
    assert torch.equal(manager.load()["model"]["w"], torch.full((2, 2), 5.0))  # type: ignore[index]


@pytest.mark.parametrize("killed_after", ["moving the old copy away", "moving the new in"])
def test_a_save_killed_while_replacing_a_step_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, killed_after: str
) -> None:
    CheckpointManager(tmp_path).save(_state(1.0), step=3, metrics={})
    renames = 0
    real_rename = Path.rename

    def rename_then_die(self: Path, target: Path) -> Path:
        nonlocal renames
        renames += 1
        result = real_rename(self, target)
        if renames == (1 if killed_after == "moving the old copy away" else 2):
            raise SystemExit("killed")  # nothing after this point runs, as after SIGKILL
        return result

    monkeypatch.setattr(Path, "rename", rename_then_die)
    with pytest.raises(SystemExit):
        CheckpointManager(tmp_path).save(_state(2.0), step=3, metrics={})
    monkeypatch.undo()

    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    CheckpointManager(tmp_path, recover=False)  # another DDP rank: rank 0 alone recovers
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == left != []
    manager = CheckpointManager(tmp_path)  # a later run opens the directory
    expected = 1.0 if killed_after == "moving the old copy away" else 2.0
    loaded = manager.load()
    assert loaded is not None and torch.equal(loaded["model"]["w"], torch.full((2, 2), expected))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    assert manager.load() is None
    with pytest.raises(CheckpointError, match="no checkpoint to resume"):
        manager.resolve("latest")
    with pytest.raises(CheckpointError, match=r"must hold model\.safetensors"):
        manager.resolve(tmp_path / "nowhere")


def test_corrupt_checkpoint_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = CheckpointManager(tmp_path).save(_state(1.0), step=1, metrics={})
    (path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(path)


class _Planted:
    """An object a pickle would build by running code: weights_only refuses it."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this ran while loading",))


def test_state_holding_an_object_is_refused_as_a_checkpoint_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = CheckpointManager(tmp_path).save(_state(1.0), step=1, metrics={})
    torch.save({"loop": _Planted()}, path / "state.pt")
    with pytest.raises(
        CheckpointError,
        match=r"refusing checkpoint .*state.pt holds Python objects .*Unsupported global",
    ):
        load_checkpoint(path)
    assert "this ran" not in capsys.readouterr().out


def test_mismatched_keys_and_shapes_are_listed(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    tensors = {k: v.clone() for k, v in model.state_dict().items()}
    tensors["0.weight"] = torch.zeros(5, 3)  # wrong shape
    del tensors["1.bias"]  # missing
    tensors["2.weight"] = torch.zeros(1)  # unexpected
    with pytest.raises(CheckpointError) as info:
        load_model_state(model, tensors, tmp_path)
    message = str(info.value)
    assert "missing keys: 1.bias" in message
    assert "unexpected keys: 2.weight" in message
    assert "0.weight: checkpoint (5, 3) != model (4, 3)" in message


def test_shared_tensors_are_saved(tmp_path: Path) -> None:
    shared = torch.ones(3)
    state = {"model": {"a": shared, "b": shared}, "loop": {"step": 0}}
    path = CheckpointManager(tmp_path).save(state, step=0, metrics={})
    assert torch.equal(load_file(str(path / "model.safetensors"))["b"], shared)


def test_latest_is_a_relative_link(tmp_path: Path) -> None:
    CheckpointManager(tmp_path).save(_state(1.0), step=1, metrics={})
    assert os.readlink(tmp_path / "latest") == "step-00000001"
