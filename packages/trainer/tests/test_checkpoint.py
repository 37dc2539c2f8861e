"""Checkpoints: atomic directories, latest link, pruning, safe loading, clear mismatches."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [".lock"]


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
    with pytest.raises(CheckpointError, match=r"cannot read .*model\.safetensors: "):
        load_checkpoint(path)


class _Planted:
    """An object a pickle would build by running ``call``: weights_only refuses it."""

    def __init__(self, call: Callable[..., object], *args: object) -> None:
        self.call, self.args = call, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (self.call, self.args)


@pytest.mark.parametrize(
    ("planted", "name"),
    [
        (_Planted(print, "this ran while loading"), "global print"),
        (_Planted(eval, "print('this ran while loading')"), "eval"),
        # torch blocks these modules outright, with a message of another form
        (_Planted(os.system, "echo this ran while loading"), f"{os.name}.system"),
        (_Planted(subprocess.Popen, ["echo", "this ran"]), ".Popen"),
        (nn.Linear(1, 1), "torch.nn.modules.linear.Linear"),
    ],
    ids=["print", "eval", "os.system", "Popen", "a module"],
)
def test_state_holding_an_object_is_refused_without_advice_to_load_it_unsafely(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], planted: object, name: str
) -> None:
    path = CheckpointManager(tmp_path).save(_state(1.0), step=1, metrics={})
    torch.save({"loop": planted}, path / "state.pt")
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(path)
    message = str(raised.value)
    assert re.search(r"refusing .*state\.pt: it holds Python objects .*\(the global \S*", message)
    assert name in message, message
    # torch's own message advises weights_only=False or allowlisting the global: not ours
    assert "weights_only" not in message and "safe_globals" not in message
    assert "\n" not in message
    assert "this ran" not in capfd.readouterr().out


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


def test_integer_weights_for_a_float_model_are_listed_and_other_float_widths_load(
    tmp_path: Path,
) -> None:
    model = nn.Linear(3, 2)
    tensors = {k: v.clone() for k, v in model.state_dict().items()}
    ints = {**tensors, "weight": tensors["weight"].to(torch.int64)}
    with pytest.raises(CheckpointError, match=r"dtype mismatches: weight: checkpoint "
                       r"torch\.int64 for model torch\.float32"):  # fmt: skip
        load_model_state(model, ints, tmp_path)
    wider = {k: v.double() for k, v in tensors.items()}
    load_model_state(model, wider, tmp_path)  # float64 into float32: the same values
    assert torch.equal(model.weight, tensors["weight"])


def test_the_weights_file_takes_the_umask_as_its_siblings_do(tmp_path: Path) -> None:
    """safetensors creates its file 0600: another user who reads the state could not read
    the weights."""
    path = CheckpointManager(tmp_path).save(_state(1.0), step=1, metrics={})
    modes = {p.name: p.stat().st_mode & 0o777 for p in path.iterdir()}
    assert modes["model.safetensors"] == modes["meta.json"] == modes["state.pt"]


def test_a_latest_step_damaged_after_its_save_is_not_silently_replaced_by_an_older_one(
    tmp_path: Path,
) -> None:
    manager = CheckpointManager(tmp_path)
    manager.save(_state(1.0), step=1, metrics={})
    manager.save(_state(2.0), step=2, metrics={})
    (tmp_path / "step-00000002" / "meta.json").unlink()  # not a save killed midway: damage
    reopened = CheckpointManager(tmp_path)
    assert reopened.latest() == tmp_path / "step-00000002"
    with pytest.raises(CheckpointError, match=r"step-00000002.*meta\.json"):
        reopened.load()


def test_a_branch_shelves_a_damaged_later_step_too(tmp_path: Path) -> None:
    """Else `latest`, left on the damaged step, would outlive the branch's own saves."""
    manager = CheckpointManager(tmp_path)
    for step in (1, 2, 5):
        manager.save(_state(float(step)), step=step, metrics={})
    (tmp_path / "step-00000005" / "meta.json").unlink()
    manager = CheckpointManager(tmp_path)
    manager.branch_from(2)
    with pytest.warns(UserWarning, match="moved to"):
        manager.save(_state(3.0), step=3, metrics={})
    assert (tmp_path / "abandoned" / "step-00000005").is_dir()
    assert CheckpointManager(tmp_path).latest() == tmp_path / "step-00000003"


def test_shared_tensors_are_saved(tmp_path: Path) -> None:
    shared = torch.ones(3)
    state = {"model": {"a": shared, "b": shared}, "loop": {"step": 0}}
    path = CheckpointManager(tmp_path).save(state, step=0, metrics={})
    assert torch.equal(load_file(str(path / "model.safetensors"))["b"], shared)


def test_latest_is_a_relative_link(tmp_path: Path) -> None:
    CheckpointManager(tmp_path).save(_state(1.0), step=1, metrics={})
    assert os.readlink(tmp_path / "latest") == "step-00000001"


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("state.pt", b"", r"cannot read .*state\.pt: EOFError"),
        (
            "state.pt",
            b"\x80\x02garbage" * 10,
            r"state\.pt: it is damaged, not a file torch\.save "
            r"wrote \(Unsupported operand \d+\)$",
        ),
        ("state.pt", b"garbage\n", r"state\.pt: it is damaged, not a file torch\.save wrote"),
        ("state.pt", [1, 2], r"state\.pt holds a list, not a training state"),
        ("meta.json", b"[]", r"meta\.json is not a torchsmith checkpoint's metadata"),
        ("meta.json", b'{"config": "x"}', r"meta\.json is not a torchsmith checkpoint's"),
        ("meta.json", b'{"metrics": 3}', r"meta\.json: 'metrics' is a int, not a mapping"),
    ],
)
def test_a_damaged_file_is_named(tmp_path: Path, file: str, content: object, message: str) -> None:
    path = CheckpointManager(tmp_path).save(_state(1.0), step=1, metrics={})
    if isinstance(content, bytes):
        (path / file).write_bytes(content)
    else:
        torch.save(content, path / file)
    with pytest.raises(CheckpointError, match=message) as raised:
        load_checkpoint(path)
    assert "\n" not in str(raised.value) and "weights_only" not in str(raised.value)


def test_a_nan_metric_is_never_the_best_and_meta_stays_json(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=1, keep_best=1, metric="v", mode="min")
    for step, value in enumerate([float("nan"), 0.5, 0.9, 0.8], start=1):
        manager.save(_state(float(step)), step=step, metrics={"v": value})
    assert [p.name for p in manager.all()] == ["step-00000002", "step-00000004"]
    json.loads((tmp_path / "step-00000004" / "meta.json").read_text(), parse_constant=_no_nan)
    assert manager.best() == [tmp_path / "step-00000002", tmp_path / "step-00000004"]


def _no_nan(token: str) -> None:
    raise AssertionError(f"{token} is not JSON")


def test_checkpoints_sort_by_step_number_not_name(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in (99_999_998, 99_999_999, 100_000_000):
        manager.save(_state(1.0), step=step, metrics={})
    assert [p.name for p in manager.all()] == ["step-99999999", "step-100000000"]


def test_a_latest_that_is_a_copied_directory_is_replaced_by_the_link(tmp_path: Path) -> None:
    """``cp -rL`` or an unzip makes ``latest`` a real directory; saving must still work, and
    a ``latest`` link left by a killed save is cleaned up."""
    manager = CheckpointManager(tmp_path)
    first = manager.save(_state(1.0), step=1, metrics={})
    (tmp_path / "latest").unlink()
    shutil.copytree(first, tmp_path / "latest")
    (tmp_path / ".tmp-latest-999").symlink_to("step-00000001", target_is_directory=True)
    manager = CheckpointManager(tmp_path)  # recovers
    assert not (tmp_path / ".tmp-latest-999").is_symlink()
    second = manager.save(_state(2.0), step=2, metrics={})
    assert (tmp_path / "latest").is_symlink() and manager.latest() == second


@pytest.mark.parametrize("keep_last", [1, 3])
def test_a_copied_latest_that_is_its_steps_only_copy_is_filed_under_that_step(
    tmp_path: Path, keep_last: int
) -> None:
    """A run shipped as its newest checkpoint alone (``latest/``, no ``step-*``) resumes,
    and the next save keeps that checkpoint as keep-last says, never deleting it unasked."""
    first = CheckpointManager(tmp_path / "a").save(_state(1.0), step=40, metrics={})
    shutil.copytree(first, tmp_path / "b" / "latest")
    manager = CheckpointManager(tmp_path / "b", keep_last=keep_last)
    assert manager.latest() == tmp_path / "b" / "latest"
    manager.branch_from(40)
    manager.save(_state(2.0), step=50, metrics={})
    names = [p.name for p in manager.all()]
    assert names == (["step-00000040"] if keep_last > 1 else []) + ["step-00000050"]
    if keep_last > 1:
        assert load_checkpoint(tmp_path / "b" / "step-00000040")["loop"]["step"] == 1
    assert os.readlink(tmp_path / "b" / "latest") == "step-00000050"


def test_a_kill_while_a_copied_latest_is_deleted_leaves_latest_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy is renamed away and the link put in its place before the copy is deleted:
    killed during that delete, ``latest`` already names the new step."""
    manager = CheckpointManager(tmp_path)
    first = manager.save(_state(1.0), step=1, metrics={})
    (tmp_path / "latest").unlink()
    shutil.copytree(first, tmp_path / "latest")

    rmtree = shutil.rmtree

    def killed(path: Path, *args: Any, **kwargs: Any) -> None:
        if ".tmp-latest-copy" in str(path):
            raise KeyboardInterrupt  # a kill, as far as the save can tell
        rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        manager.save(_state(2.0), step=2, metrics={})
    monkeypatch.undo()
    assert os.readlink(tmp_path / "latest") == "step-00000002"
    assert load_checkpoint(tmp_path / "latest")["loop"]["step"] == 2
    CheckpointManager(tmp_path)  # the next run's recovery deletes the copy
    assert not list(tmp_path.glob(".tmp-*"))


_FULL_DISK = """
import resource, signal, sys, torch
from torchsmith.interfaces import CheckpointError
from torchsmith.trainer import CheckpointManager
manager = CheckpointManager(sys.argv[1])
state = {"model": {"w": torch.zeros(4)}, "loop": {"step": 1}}
manager.save(state, step=1, metrics={})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
for big in ("model", "loop"):  # safetensors' write fails, then torch.save's
    state = {"model": {"w": torch.zeros(4)}, "loop": {"step": 2}}
    state[big] = {"w": torch.zeros(100_000)} if big == "model" else {"x": torch.zeros(100_000)}
    try:
        manager.save(state, step=2, metrics={})
    except CheckpointError as exc:
        print("CheckpointError", exc)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_full_disk_is_a_checkpoint_error_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """A real failed write (a file size limit: EFBIG, as a full disk gives ENOSPC), in a
    child process: safetensors and torch.save fail with their own errors, not OSError."""
    out = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(tmp_path)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and all("cannot write checkpoint" in line for line in lines)
    assert all("step-00000002" in line for line in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "latest", "step-00000001"]


def test_recovery_links_latest_to_a_step_placed_but_not_yet_linked(tmp_path: Path) -> None:
    """Killed between moving step 2 into place and repointing ``latest``: step 2 is whole,
    and the next manager links it (so a resume does not redo it, or shelve it)."""
    manager = CheckpointManager(tmp_path)
    manager.save(_state(1.0), step=1, metrics={})
    manager.save(_state(2.0), step=2, metrics={})
    (tmp_path / "latest").unlink()
    (tmp_path / "latest").symlink_to("step-00000001", target_is_directory=True)
    assert CheckpointManager(tmp_path).latest() == tmp_path / "step-00000002"
    (tmp_path / "latest").unlink()  # killed before the first link was made
    assert CheckpointManager(tmp_path).latest() == tmp_path / "step-00000002"
    assert (tmp_path / "latest").is_symlink()


def test_saving_after_resuming_from_an_older_checkpoint_shelves_the_later_ones(
    tmp_path: Path,
) -> None:
    """A run resumed from step 1 (of a run that reached 3) is a new branch: steps 2 and 3
    leave keep-last, keep-best and ``latest`` alone, kept under ``abandoned/``."""
    manager = CheckpointManager(tmp_path, keep_last=2, keep_best=1, metric="v")
    for step in (1, 2, 3):
        manager.save(_state(float(step)), step=step, metrics={"v": float(step)})
    manager.branch_from(1)  # what Trainer.resume does
    with pytest.warns(UserWarning, match=r"resumed from before step-00000002: the 2 later"):
        manager.save(_state(5.0), step=2, metrics={"v": 9.0})
    manager.save(_state(6.0), step=3, metrics={"v": 9.0})  # no more shelving
    assert [p.name for p in manager.all()] == ["step-00000001", "step-00000002", "step-00000003"]
    assert manager.best()[0].name == "step-00000001" and manager.latest() == manager.all()[-1]
    shelved = sorted(p.name for p in (tmp_path / "abandoned").iterdir())
    assert shelved == ["step-00000002", "step-00000003"]
    assert load_checkpoint(tmp_path / "abandoned" / "step-00000003")["loop"]["step"] == 3


def test_a_kill_after_shelving_leaves_latest_on_a_kept_step(tmp_path: Path) -> None:
    """Shelving moves the step ``latest`` names: ``latest`` first moves to the step the run
    resumed from, so a kill before the new step is placed leaves it naming a checkpoint.
    A link left naming nothing (a kill in an older version) is relinked by recovery."""
    manager = CheckpointManager(tmp_path, keep_last=3)
    for step in (1, 2, 3):
        manager.save(_state(float(step)), step=step, metrics={})
    with pytest.warns(UserWarning, match="later checkpoint"):
        manager._abandon_after(1)  # the first save of a branch off step 1, killed here
    assert os.readlink(tmp_path / "latest") == "step-00000001"
    assert load_checkpoint(tmp_path / "latest")["loop"]["step"] == 1
    (tmp_path / "latest").unlink()
    (tmp_path / "latest").symlink_to("step-00000003", target_is_directory=True)  # dangling
    assert CheckpointManager(tmp_path).latest() == tmp_path / "step-00000001"
    assert os.readlink(tmp_path / "latest") == "step-00000001"


def test_recovery_keeps_a_latest_link_to_a_checkpoint_elsewhere(tmp_path: Path) -> None:
    """A run directory whose ``latest`` links to another run's checkpoint, and holds none of
    its own: the link works, so recovery leaves it (it removes only a link to nothing)."""
    other = CheckpointManager(tmp_path / "other").save(_state(1.0), step=1, metrics={})
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "latest").symlink_to(other, target_is_directory=True)
    assert CheckpointManager(tmp_path / "run").latest() == other
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "latest").symlink_to(tmp_path / "nothing", target_is_directory=True)
    assert CheckpointManager(tmp_path / "gone").latest() is None
    assert not (tmp_path / "gone" / "latest").is_symlink()


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_save_waits_for_the_directory_lock(tmp_path: Path) -> None:
    """Another process recovering the directory (it deletes ``.tmp-*``) holds the lock: a
    save waits for it instead of losing its temporary directory."""
    import fcntl

    manager = CheckpointManager(tmp_path)
    with open(tmp_path / ".lock", "a") as other:  # another open file: as another process
        fcntl.flock(other, fcntl.LOCK_EX)
        saver = threading.Thread(target=manager.save, args=(_state(1.0),), kwargs={"step": 1,
                                 "metrics": {}})  # fmt: skip
        saver.start()
        saver.join(timeout=0.3)
        assert saver.is_alive() and manager.all() == []
        fcntl.flock(other, fcntl.LOCK_UN)
    saver.join(timeout=10)
    assert [p.name for p in manager.all()] == ["step-00000001"]
