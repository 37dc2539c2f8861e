"""What a script around `torchsmith train` relies on: stdout, exit codes, pipes, one run
per directory, and a config that means the same in TOML, YAML and --set."""

from __future__ import annotations

import fcntl
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from torchsmith.interfaces import ConfigError
from torchsmith.trainer import NonFiniteLossError, apply_overrides, train, validate_config
from torchsmith.trainer._cli import main
from torchsmith.trainer._config_files import load_yaml, read_config_file

from .test_cli import FAST

FAST_BAR = [a for a in FAST if a != "--no-progress"]  # with the progress bar
OVERRIDES = FAST[1:-1:2]  # the values of its --set


def test_stdout_holds_only_the_done_line_with_whole_step_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    steps = ["--set", "training.max_steps=20000", "--max-steps", "12"]
    assert main(["digits-classifier", "--out", str(tmp_path), *FAST_BAR, *steps]) == 0
    out, err = capsys.readouterr()
    assert re.fullmatch(r"done: step=12, train_loss=[\d.]+(, val_\w+=[\d.]+)+\n", out), out
    assert "step 12: val_loss=" in err  # the progress bar's lines: on stderr


def test_exit_codes_for_a_nan_stop_and_ctrl_c(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def raising(error: BaseException) -> object:
        def run(*args: object, **kwargs: object) -> None:
            raise error

        return run

    monkeypatch.setattr("torchsmith.trainer._cli.train", raising(NonFiniteLossError("nan")))
    assert main(["digits-classifier", "--out", str(tmp_path)]) == 3  # not 2: not the config
    monkeypatch.setattr("torchsmith.trainer._cli.train", raising(KeyboardInterrupt()))
    assert main(["digits-classifier", "--out", str(tmp_path)]) == 130
    assert capsys.readouterr().err.endswith("torchsmith train: interrupted\n")


@pytest.mark.parametrize("gone", ["stdout", "stderr"])
def test_a_reader_that_goes_away_does_not_stop_the_run(tmp_path: Path, gone: str) -> None:
    """`torchsmith train ... | head -0` (stdout) or `2> >(head -0)` (stderr, where the
    progress bar and its evaluation lines go): the run trains and checkpoints all the same,
    and the other stream is still written."""
    code = "import sys; from torchsmith.trainer._cli import main; sys.exit(main(sys.argv[1:]))"
    args = ["digits-classifier", "--out", str(tmp_path), *FAST_BAR, "--max-steps", "5"]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    if gone == "stdout":
        proc.stdout.close()  # the reader is gone before anything is printed
        err = proc.stderr.read()
        assert b"Traceback" not in err and b"step 5: val_loss=" in err
    else:  # rich's default on a broken pipe: exit 1, with stdout sent to /dev/null
        proc.stderr.close()
        assert proc.stdout.read().startswith(b"done: step=5, ")
    assert proc.wait(timeout=120) == 0
    assert (tmp_path / "checkpoints" / "step-00000005" / "model.safetensors").is_file()


def test_a_second_run_on_a_directory_in_use_is_refused(tmp_path: Path) -> None:
    with open(tmp_path / ".run.lock", "a") as held:  # as a run in another process holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match=r"out_dir \(--out\): another run is training in"):
            train("digits-classifier", overrides=OVERRIDES, out_dir=tmp_path, max_steps=2)
        fcntl.flock(held, fcntl.LOCK_UN)
    assert not (tmp_path / "checkpoints").exists()
    train("digits-classifier", overrides=OVERRIDES, out_dir=tmp_path, max_steps=2)
    assert (tmp_path / "checkpoints" / "latest").is_dir()  # the lock went with its run


def test_an_empty_out_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["digits-classifier", "--out", "", *FAST]) == 2  # say, an unset $OUT
    assert "out_dir: String should have at least 1 character" in capsys.readouterr().err


def test_resuming_into_a_new_out_at_the_checkpoints_step_writes_it_there(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["digits-classifier", "--out", str(first), *FAST, "--max-steps", "4"]) == 0
    resume = ["--resume", str(first / "checkpoints" / "latest"), "--max-steps", "4"]
    assert main(["digits-classifier", "--out", str(second), *FAST, *resume]) == 0
    written = second / "checkpoints" / "latest" / "model.safetensors"
    assert (
        written.read_bytes()
        == (first / "checkpoints" / "latest" / "model.safetensors").read_bytes()
    )


def test_resuming_another_runs_checkpoint_starts_the_out_log_afresh(tmp_path: Path) -> None:
    """A log left in --out by a run that never saved (Ctrl-C before its first checkpoint)
    is not this run's: it must not read as the start of it."""
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["digits-classifier", "--out", str(first), *FAST, "--max-steps", "4"]) == 0
    second.mkdir()
    (second / "metrics.jsonl").write_bytes((first / "metrics.jsonl").read_bytes())
    resume = ["--resume", str(first / "checkpoints" / "latest"), "--max-steps", "6"]
    assert main(["digits-classifier", "--out", str(second), *FAST, *resume]) == 0
    events = [json.loads(line) for line in (second / "metrics.jsonl").read_text().splitlines()]
    assert min(e["step"] for e in events) > 4, events
    assert [e["kind"] for e in events].count("end") == 1


@pytest.mark.parametrize(
    ("text", "value"),
    [("1e-4", 1e-4), ("017", 17), ("1_000", 1000), ("1:30", "1:30"), ("on", "on"),
     ("true", True), ("0x1f", 31), ("null", None), ("[1, 2e-3]", [1, 2e-3])],
)  # fmt: skip
def test_yaml_reads_numbers_and_booleans_as_toml_does(text: str, value: object) -> None:
    assert load_yaml(text) == value and type(load_yaml(text)) is type(value)


def test_a_config_means_the_same_in_toml_yaml_and_set(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text("[task]\nloss_kwargs = {label_smoothing = 1e-1}\n")
    (tmp_path / "a.yaml").write_text("task:\n  loss_kwargs: {label_smoothing: 1e-1}\n")
    toml, yaml = (read_config_file(tmp_path / f"a.{s}") for s in ("toml", "yaml"))
    overridden = apply_overrides({}, ["task.loss_kwargs={label_smoothing: 1e-1}"])
    assert toml == yaml == overridden == {"task": {"loss_kwargs": {"label_smoothing": 0.1}}}
    assert validate_config(toml) == validate_config(yaml)


def test_set_keeps_text_with_a_hash_as_written() -> None:
    values = apply_overrides(
        {}, ["eval.sample_prompt=Step #1", "name= run-1 ", "a='x #1'", "b=#x", "c=!!str 1e3"]
    )
    assert values == {
        "eval": {"sample_prompt": "Step #1"},
        "name": "run-1",
        "a": "x #1",
        "b": "#x",
        "c": "1e3",
    }


def test_set_keeps_text_that_only_yamls_block_syntax_would_make_structure() -> None:
    """A prompt on a markdown corpus may well start with "- " or be "---"."""
    raw = ["- item", "-  two words", "---", "...", "key: value", "[1, 2]", "{a: 1}", "null"]
    values = apply_overrides({}, [f"v{i}={text}" for i, text in enumerate(raw)])
    assert list(values.values()) == [
        "- item", "-  two words", "---", "...", "key: value", [1, 2], {"a": 1}, None
    ]  # fmt: skip


def test_a_toml_config_with_a_byte_order_mark_reads_as_the_yaml_one_does(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_bytes(b"\xef\xbb\xbf[model]\nhidden = [32]\n")
    (tmp_path / "c.yaml").write_bytes(b"\xef\xbb\xbfmodel:\n  hidden: [32]\n")
    read = [read_config_file(tmp_path / name) for name in ("c.toml", "c.yaml")]
    assert read[0] == read[1] == {"model": {"hidden": [32]}}


@pytest.mark.parametrize("bad", ["!!int 1.5", "!!float abc"])
def test_a_value_that_is_not_its_tag_is_a_config_error(tmp_path: Path, bad: str) -> None:
    (tmp_path / "c.yaml").write_text(f"seed: {bad}\n")
    with pytest.raises(ConfigError, match=r"is not valid: .* is not an? (integer|number)"):
        read_config_file(tmp_path / "c.yaml")
    assert apply_overrides({}, [f"seed={bad}"]) == {"seed": bad}  # text, which validation names


def test_a_run_that_fails_early_removes_the_directories_it_made(tmp_path: Path) -> None:
    out = tmp_path / "new" / "run"
    with pytest.raises(ConfigError, match=r"loader\.batch_size"):
        train("digits-classifier", overrides=["loader.batch_size=5000"], out_dir=out)
    assert list(tmp_path.iterdir()) == []
