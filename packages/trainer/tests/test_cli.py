"""The `torchsmith train` command line contract, including a resume after SIGKILL."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import torch

from torchsmith.trainer import validate_config
from torchsmith.trainer._cli import main

FAST = [
    "--set",
    "training.max_steps=30",
    "--set",
    "loader.batch_size=64",
    "--set",
    "model.hidden=[32]",
    "--set",
    "eval.every_steps=null",
    "--no-progress",
]


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    assert capsys.readouterr().out.split() == ["char-gpt", "digits-classifier", "simclr-digits"]


def test_bad_config_fails_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["digits-classifier", "--out", str(tmp_path), "--set", "optim.name=adamx"])
    assert code == 2
    err = capsys.readouterr().err
    assert "optim.name" in err and "'adamw', 'adam', 'sgd' or 'rmsprop'" in err
    assert not (tmp_path / "checkpoints").exists()


def test_a_fresh_run_into_another_runs_checkpoints_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["digits-classifier", "--out", str(tmp_path), *FAST, "--max-steps", "3"]) == 0
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    capsys.readouterr()
    assert main(["digits-classifier", "--out", str(tmp_path), *FAST, "--max-steps", "5"]) == 2
    err = capsys.readouterr().err
    assert "out_dir:" in err and "step-00000003" in err and "--resume latest" in err
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before
    # Continuing it is what --resume is for.
    assert main(["digits-classifier", "--out", str(tmp_path), *FAST, "--max-steps", "5",
                 "--resume", "latest"]) == 0  # fmt: skip


@pytest.mark.parametrize(
    ("recipe", "override", "expected"),
    [
        ("digits-classifier", "eval.early_stopping_metric=val_acc", "(allowed: val_accuracy, "),
        ("digits-classifier", "checkpoint.metric=val_los", "(allowed: train_loss, "),
        ("char-gpt", "data.block_size=128", "data.block_size: 128 is longer than"),
        ("digits-classifier", "task.loss=cross_entropyy", "task.loss: "),
        ("digits-classifier", "task.loss_kwargs={smoothing: 0.1}", "'smoothing'"),
    ],
)
def test_configs_that_would_fail_mid_run_fail_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], recipe: str, override: str, expected: str
) -> None:
    out = tmp_path / "run"
    fast = FAST if recipe == "digits-classifier" else ["--no-progress"]
    assert main([recipe, "--out", str(out), "--set", override, *fast]) == 2
    err = capsys.readouterr().err
    field = override.partition("=")[0]
    origin = f"(recipe {recipe} with overrides)"
    assert err.startswith(f"torchsmith train: error: invalid config {origin}:\n  {field}: ") or (
        err.startswith(f"torchsmith train: error: {field}: ")
    )
    assert expected in err and "Traceback" not in err
    assert not out.exists()  # nothing written, not even metrics.jsonl


def test_max_steps_beyond_the_schedule_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["digits-classifier", "--out", str(out), "--max-steps", "31", *FAST]) == 2
    err = capsys.readouterr().err
    assert "(--max-steps): 31 is beyond training.max_steps 30" in err
    assert "--set training.max_steps=31" in err
    assert not out.exists()


def test_missing_resume_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["digits-classifier", "--out", str(tmp_path), "--resume", "latest", *FAST]) == 2
    assert "no checkpoint to resume" in capsys.readouterr().err


def test_resume_into_another_model_lists_the_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["digits-classifier", "--out", str(tmp_path), "--max-steps", "2", *FAST]) == 0
    code = main(["digits-classifier", "--out", str(tmp_path), "--resume", "latest", *FAST,
                 "--set", "model.hidden=[16, 16]"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "does not match the model" in err
    assert "model.hidden: checkpoint [32], this run [16, 16]" in err  # the setting, then keys
    assert "missing keys: 4.bias, 4.weight" in err
    assert "0.weight: checkpoint (32, 64) != model (16, 64)" in err


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (["--set", "optim.lr=0.1", "--seed", "9"], ["optim.lr: checkpoint 0.003, this run 0.1",
                                                     "seed: checkpoint 0, this run 9"]),
        (["--set", "optim.name=sgd"], ["optim.name: checkpoint 'adamw', this run 'sgd'"]),
        (["--set", "model.dropout=0.5"], ["model.dropout: checkpoint 0.1, this run 0.5"]),
        (["--set", "loader.batch_size=16"], ["loader.batch_size: checkpoint 64, this run 16"]),
        (["--set", "loader.shuffle=false"], ["loader.shuffle: checkpoint True, this run False"]),
    ],
)  # fmt: skip
def test_resume_with_other_settings_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: list[str], expected: list[str]
) -> None:
    """The optimizer's settings come back with its state (a new optim.lr would not apply, and
    another optimizer's state does not load); seed, data and model changes break exactness."""
    fast = [*FAST, "--set", "model.dropout=0.1"]  # a dropout change then keeps the shapes
    assert main(["digits-classifier", "--out", str(tmp_path), "--max-steps", "2", *fast]) == 0
    capsys.readouterr()
    code = main(["digits-classifier", "--out", str(tmp_path), "--resume", "latest", *fast, *change])
    err = capsys.readouterr().err
    assert code == 2 and "was trained with other settings" in err
    assert all(line in err for line in expected), err
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-00000002"]


def test_resume_with_dataloader_workers_where_there_were_none_warns(tmp_path: Path) -> None:
    assert main(["digits-classifier", "--out", str(tmp_path), "--max-steps", "2", *FAST]) == 0
    workers = ["--set", "loader.num_workers=1", "--max-steps", "3"]
    with pytest.warns(UserWarning, match=r"^loader\.num_workers: checkpoint 0, this run 1"):
        assert main(["digits-classifier", "--out", str(tmp_path), "--resume", "latest", *FAST,
                     *workers]) == 0  # fmt: skip


def test_a_warning_on_the_command_line_is_one_line(tmp_path: Path) -> None:
    """Without the file, line number and source line Python's default format adds."""
    out = subprocess.run(
        [sys.executable, "-m", "torchsmith.trainer", "digits-classifier", "--out",
         str(tmp_path), "--max-steps", "1", "--set", "schedule.warmup_steps=1000", *FAST],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stderr.splitlines() == [
        "torchsmith train: warning: schedule.warmup_steps: 1000 is not below "
        "training.max_steps (30), so the LR never reaches optim.lr and the 'cosine' decay "
        "never starts"
    ]


def test_a_damaged_checkpoint_is_named_as_such_whatever_else_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["digits-classifier", "--out", str(tmp_path), "--max-steps", "2", *FAST]) == 0
    (tmp_path / "checkpoints" / "latest" / "state.pt").write_bytes(b"garbage\n")
    capsys.readouterr()
    code = main(["digits-classifier", "--out", str(tmp_path), "--resume", "latest", *FAST,
                 "--set", "model.dropout=0.3"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "state.pt: it is damaged" in err and "do not fit" not in err


def test_resume_onto_a_changed_corpus_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """data.paths names the same folder, but its text changed: a char vocabulary's ids, or
    the batches, would not be the checkpoint's."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.md").write_text("the quick brown fox jumps over the lazy dog. " * 40)
    small = ["char-gpt", "--out", str(tmp_path / "run"), "--no-progress",
             "--set", f"data.paths=[{corpus}]", "--set", "data.block_size=16",
             "--set", "model={kind: gpt, block_size: 16, n_layer: 1, n_head: 2, n_embd: 16}",
             "--set", "eval.every_steps=null", "--set", "eval.sample_tokens=0"]  # fmt: skip
    assert main([*small, "--max-steps", "2"]) == 0
    assert main([*small, "--max-steps", "3", "--resume", "latest"]) == 0  # unchanged: fine
    (corpus / "a.md").write_text("the quick brown fox jumps over the lazy cat. " * 40)
    capsys.readouterr()
    assert main([*small, "--max-steps", "4", "--resume", "latest"]) == 2
    err = capsys.readouterr().err
    assert "data.paths: the text there is not what the checkpoint trained on" in err


def test_resume_to_a_step_before_the_checkpoint_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["digits-classifier", "--out", str(tmp_path), "--max-steps", "6", *FAST]) == 0
    capsys.readouterr()
    resume = ["--resume", "latest", "--max-steps", "4"]
    assert main(["digits-classifier", "--out", str(tmp_path), *resume, *FAST]) == 2
    assert "--max-steps): 4 is before step 6" in capsys.readouterr().err


def test_a_resume_logs_what_follows_its_step_once(tmp_path: Path) -> None:
    """A run killed after its checkpoint logged steps it will train again, and may have left a
    line cut short: the resumed run drops both, so each step is logged once, in order."""
    every = ["--set", "training.log_every=3", "--set", "checkpoint.every_steps=6"]
    assert (
        main(["digits-classifier", "--out", str(tmp_path), "--max-steps", "6", *every, *FAST]) == 0
    )
    log = tmp_path / "metrics.jsonl"
    with log.open("a") as f:  # what a killed run could have written after step 6
        f.write('{"kind": "step", "step": 9, "metrics": {"loss": 1.0}}\n{"kind": "st')
    resume = ["--resume", "latest", "--max-steps", "12"]
    assert main(["digits-classifier", "--out", str(tmp_path), *resume, *every, *FAST]) == 0
    events = [json.loads(line) for line in log.read_text().splitlines()]
    steps = [e["step"] for e in events if e["kind"] == "step"]
    assert steps == [3, 6, 9, 12]
    assert [e["step"] for e in events if e["kind"] == "end"] == [12]  # the run went on at 6


def test_resuming_a_finished_run_logs_and_evaluates_nothing_twice(tmp_path: Path) -> None:
    run = ["digits-classifier", "--out", str(tmp_path), "--max-steps", "6",
           "--set", "eval.every_steps=3", *FAST]  # fmt: skip
    assert main(run) == 0
    first = (tmp_path / "metrics.jsonl").read_text()
    assert main([*run, "--resume", "latest"]) == 0
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(e["kind"], e["step"]) for e in events if e["step"] == 6] == [
        ("step", 6), ("eval", 6), ("checkpoint", 6), ("end", 6)
    ]  # fmt: skip
    ends = [e["metrics"] for e in events if e["kind"] == "end"]
    assert ends == [json.loads(first.splitlines()[-1])["metrics"]]  # the same final numbers


def test_a_fresh_run_starts_its_own_log(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"kind": "step", "step": 40, "metrics": {}}\n')
    assert main(["digits-classifier", "--out", str(tmp_path), "--max-steps", "3", *FAST]) == 0
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line)["step"] <= 3 for line in lines)


def test_resume_from_elsewhere_into_another_runs_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for out in (one, two):
        assert main(["digits-classifier", "--out", str(out), "--max-steps", "2", *FAST]) == 0
    capsys.readouterr()
    resume = ["--resume", str(one / "checkpoints" / "latest")]
    assert main(["digits-classifier", "--out", str(two), *resume, *FAST]) == 2
    assert "already holds checkpoints of an earlier run" in capsys.readouterr().err
    mine = ["--resume", str(two / "checkpoints" / "step-00000002"), "--max-steps", "4"]
    assert main(["digits-classifier", "--out", str(two), *mine, *FAST]) == 0


def test_resume_may_change_what_it_logs_evaluates_and_saves(tmp_path: Path) -> None:
    assert main(["digits-classifier", "--out", str(tmp_path), "--max-steps", "2", *FAST]) == 0
    later = ["--set", "eval.every_steps=5", "--set", "checkpoint.every_steps=4",
             "--set", "training.log_every=1", "--max-steps", "8"]  # fmt: skip
    assert (
        main(["digits-classifier", "--out", str(tmp_path), "--resume", "latest", *FAST, *later])
        == 0
    )
    assert (tmp_path / "checkpoints" / "step-00000008").is_dir()


def test_stop_and_resume_give_the_same_bytes(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["digits-classifier", "--out", str(one), "--max-steps", "20", *FAST]) == 0
    assert main(["digits-classifier", "--out", str(two), "--max-steps", "9", *FAST]) == 0
    assert (
        main(
            [
                "digits-classifier",
                "--out",
                str(two),
                "--max-steps",
                "20",
                "--resume",
                "latest",
                *FAST,
            ]
        )
        == 0
    )
    a = (one / "checkpoints" / "latest" / "model.safetensors").read_bytes()
    b = (two / "checkpoints" / "latest" / "model.safetensors").read_bytes()
    assert a == b
    assert (two / "checkpoints" / "step-00000009").is_dir()


def test_resume_from_an_explicit_checkpoint_path(tmp_path: Path) -> None:
    straight, first, second = tmp_path / "straight", tmp_path / "first", tmp_path / "second"
    assert main(["digits-classifier", "--out", str(straight), "--max-steps", "7", *FAST]) == 0
    every3 = ["--set", "checkpoint.every_steps=3"]
    assert main(["digits-classifier", "--out", str(first), "--max-steps", "9", *every3, *FAST]) == 0
    step6 = first / "checkpoints" / "step-00000006"
    assert step6.is_dir() and (first / "checkpoints" / "latest").resolve().name == "step-00000009"
    # From a checkpoint that is not the latest, into a fresh run directory.
    resume = ["--resume", str(step6), "--max-steps", "7"]
    assert main(["digits-classifier", "--out", str(second), *resume, *FAST]) == 0
    latest = second / "checkpoints" / "latest"
    assert latest.resolve().name == "step-00000007"
    expected = (straight / "checkpoints" / "latest" / "model.safetensors").read_bytes()
    assert (latest / "model.safetensors").read_bytes() == expected


def test_meta_json_holds_versions_epoch_step_and_config(tmp_path: Path) -> None:
    args = ["--max-steps", "25", "--seed", "5", *FAST]
    assert main(["digits-classifier", "--out", str(tmp_path), *args]) == 0
    meta = json.loads((tmp_path / "checkpoints" / "latest" / "meta.json").read_text())
    assert meta["step"] == 25
    assert meta["epoch"] == 1  # 1438 training digits, 22 full batches of 64 an epoch
    assert meta["versions"]["torch"] == torch.__version__
    assert meta["versions"]["python"] == platform.python_version()
    for dist in ("torchsmith-trainer", "torchsmith-interfaces"):
        assert meta["versions"][dist] == version(dist)
    config = validate_config(meta["config"])  # the run can be repeated from its metadata
    assert config.seed == 5 and config.out_dir == str(tmp_path)
    assert config.training.stop_after == 25 and config.training.max_steps == 30
    assert config.model.hidden == [32]  # type: ignore[union-attr]
    assert set(meta["metrics"]) >= {"val_loss", "val_accuracy", "train_loss"}


def test_seed_changes_the_run(tmp_path: Path) -> None:
    for seed in ("1", "2"):
        assert (
            main(
                [
                    "digits-classifier",
                    "--out",
                    str(tmp_path / seed),
                    "--max-steps",
                    "2",
                    "--seed",
                    seed,
                    *FAST,
                ]
            )
            == 0
        )
    a = (tmp_path / "1" / "checkpoints" / "latest" / "model.safetensors").read_bytes()
    assert a != (tmp_path / "2" / "checkpoints" / "latest" / "model.safetensors").read_bytes()


def _cli(*args: str) -> list[str]:
    code = "import sys; from torchsmith.trainer._cli import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, *args]


def _latest_step(out: Path) -> int:
    """The step the ``latest`` link names, or -1 before the first checkpoint."""
    try:
        return int(os.readlink(out / "checkpoints" / "latest").rsplit("-", 1)[1])
    except OSError:
        return -1


@pytest.mark.slow
def test_resume_after_sigkill_is_byte_identical(tmp_path: Path) -> None:
    # Long enough that the run is still going when the kill lands: a step takes about 1 ms,
    # and with keep_last=2 a given checkpoint lasts only 40 steps, so poll the link instead.
    args = [
        "digits-classifier",
        "--set",
        "training.max_steps=3000",
        "--set",
        "loader.batch_size=64",
        "--set",
        "checkpoint.every_steps=20",
        "--set",
        "eval.every_steps=null",
        "--set",
        "model.hidden=[256, 256]",
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(*args, "--out", str(killed)), env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _latest_step(killed) < 60:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed mid-run, not after the end
    assert 60 <= _latest_step(killed) < 3000
    subprocess.run(_cli(*args, "--out", str(killed), "--resume", "latest"), env=env, check=True)
    clean = tmp_path / "clean"
    subprocess.run(_cli(*args, "--out", str(clean)), env=env, check=True)
    a = (clean / "checkpoints" / "latest" / "model.safetensors").read_bytes()
    assert a == (killed / "checkpoints" / "latest" / "model.safetensors").read_bytes()


def test_an_out_dir_that_is_a_file_fails_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("")
    for out in (tmp_path / "afile", tmp_path / "afile" / "run"):
        assert main(["digits-classifier", "--out", str(out), *FAST]) == 2
        assert f"out_dir (--out): {tmp_path / 'afile'} is a file, not a directory" in (
            capsys.readouterr().err
        )


@pytest.mark.parametrize(("name", "make", "kind"), [
    ("checkpoints", lambda p: p.write_text("x"), "a directory"),
    ("metrics.jsonl", lambda p: p.mkdir(), "a file"),
])  # fmt: skip
def test_what_the_run_writes_being_in_the_way_fails_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, make: Any, kind: str
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    make(out / name)
    assert main(["digits-classifier", "--out", str(out), "--max-steps", "2", *FAST]) == 2
    assert f"out_dir (--out): {out / name} is in the way: it must be {kind}" in (
        capsys.readouterr().err
    )
    assert sorted(p.name for p in out.iterdir()) == [name]  # nothing trained, nothing written


def test_a_missing_or_damaged_resume_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["digits-classifier", "--out", str(out), "--max-steps", "3", *FAST]) == 0
    capsys.readouterr()
    nowhere = tmp_path / "nowhere"
    assert main(["digits-classifier", "--out", str(out), "--resume", str(nowhere), *FAST]) == 2
    assert f"resume (--resume): {nowhere} does not exist" in capsys.readouterr().err
    (out / "checkpoints" / "latest" / "state.pt").write_bytes(b"")
    assert main(["digits-classifier", "--out", str(out), "--resume", "latest", *FAST]) == 2
    err = capsys.readouterr().err
    assert "state.pt: EOFError" in err and "Traceback" not in err
    torch.save({"steps": 3}, out / "checkpoints" / "latest" / "state.pt")
    assert main(["digits-classifier", "--out", str(out), "--resume", "latest", *FAST]) == 2
    assert "state.pt is not a training state: it lacks optimizer, rng, data, loop" in (
        capsys.readouterr().err
    )


def test_resume_from_an_older_checkpoint_of_the_same_run_branches_off(tmp_path: Path) -> None:
    """Back to step 6 of a run that reached 9: the new branch's step 7 equals an
    uninterrupted run's, and step 9 of the old branch is kept aside, not pruned or ranked."""
    straight, run = tmp_path / "straight", tmp_path / "run"
    assert main(["digits-classifier", "--out", str(straight), "--max-steps", "7", *FAST]) == 0
    every3 = ["--set", "checkpoint.every_steps=3"]
    assert main(["digits-classifier", "--out", str(run), "--max-steps", "9", *every3, *FAST]) == 0
    step6 = run / "checkpoints" / "step-00000006"
    with pytest.warns(UserWarning, match="moved to"):  # a caller recording warnings gets it
        code = main(["digits-classifier", "--out", str(run), "--resume", str(step6),
                     "--max-steps", "7", *every3, *FAST])  # fmt: skip
    assert code == 0
    checkpoints = run / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("step-*")) == ["step-00000006", "step-00000007"]
    assert [p.name for p in (checkpoints / "abandoned").iterdir()] == ["step-00000009"]
    expected = (straight / "checkpoints" / "latest" / "model.safetensors").read_bytes()
    assert (checkpoints / "latest" / "model.safetensors").read_bytes() == expected


def test_main_leaves_a_callers_own_process_group_alone(tmp_path: Path) -> None:
    """The CLI leaves only a process group it started itself."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=(tmp_path / "pg").as_uri(), rank=0, world_size=1)
    try:
        assert main(["digits-classifier", "--out", str(tmp_path / "run"), "--max-steps", "2",
                     *FAST]) == 0  # fmt: skip
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()
