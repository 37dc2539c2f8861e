"""Step events and their sinks: rates cover training steps only, the JSONL log survives a
deleted directory and a cut last line, the progress bar ends where the run stops."""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from torch.utils.data import DataLoader, Dataset

from torchsmith.interfaces import TrainingEvent
from torchsmith.trainer import (
    CallbackSink,
    JsonlSink,
    ListSink,
    RichProgressSink,
    _api,
    build_trainer,
    train,
)
from torchsmith.trainer._events import _si, drop_events_after

from .conftest import small_config


class _SlowValidation(Dataset[Any]):
    """Eight examples, each taking 50 ms to read: an evaluation of 0.4 s."""

    def __init__(self, base: Dataset[Any]) -> None:
        self.base = base

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> Any:
        time.sleep(0.05)
        return self.base[index]


def test_an_evaluation_before_the_last_log_is_not_step_time(tmp_path: Path) -> None:
    """Steps 21-25 end with an evaluation at 25, then the last interval's log: that log's
    step time is a training step's (well under a millisecond here), not 0.4 s / 5."""
    config = small_config(
        tmp_path, "training.max_steps=25", "training.log_every=10", "eval.every_steps=25"
    )
    steps: dict[int, dict[str, float]] = {}

    class Sink:
        def emit(self, event: TrainingEvent) -> None:
            if event.kind == "step":
                steps[event.step] = event.metrics

    trainer = build_trainer(config, sinks=[Sink()])
    assert trainer.evaluation is not None
    slow = _SlowValidation(trainer.evaluation.data.dataset)  # type: ignore[attr-defined]
    trainer.evaluation.data = DataLoader(slow, batch_size=4)
    trainer.fit()
    assert sorted(steps) == [10, 20, 25]
    # Only the last log's: the first interval's holds a GPU's warm-up (over 20 ms a step on an
    # H200 shared by 12 test workers).
    assert steps[25]["step_time_s"] < 0.02, steps


def _event(step: int) -> TrainingEvent:
    return TrainingEvent(kind="step", step=step, epoch=0, metrics={"loss": 1.0})


def test_a_deleted_log_starts_again_with_a_warning(tmp_path: Path) -> None:
    """The run directory removed mid-run: later events must not go into the deleted file."""
    log = tmp_path / "run" / "metrics.jsonl"
    sink = JsonlSink(log)
    sink.emit(_event(1))
    shutil.rmtree(tmp_path / "run")
    with pytest.warns(UserWarning, match="was deleted during the run"):
        sink.emit(_event(2))
    sink.close()
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [2]


def test_trimming_ends_a_log_cut_before_its_newline(tmp_path: Path) -> None:
    """A last line complete but for its newline: the next event must start a line of its
    own, or both become one line no JSON parser reads."""
    log = tmp_path / "metrics.jsonl"
    log.write_text(_event(1).write() + "\n" + _event(2).write())
    assert drop_events_after(log, 5) == 0
    with JsonlSink(log) as sink:
        sink.emit(_event(6))
    assert sink._file.closed
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 6]


def test_trimming_for_a_resume_keeps_the_step_but_not_where_a_process_stopped(
    tmp_path: Path,
) -> None:
    log = tmp_path / "metrics.jsonl"
    kinds = ["step", "eval", "checkpoint", "error", "end"]
    log.write_text("".join(
        TrainingEvent(kind=kind, step=step, epoch=0).write() + "\n"  # type: ignore[arg-type]
        for step in (5, 6) for kind in kinds
    ))  # fmt: skip
    assert drop_events_after(log, 6) == 2
    kept = [(e["kind"], e["step"]) for e in map(json.loads, log.read_text().splitlines())]
    assert kept == [(kind, 5) for kind in kinds] + [("step", 6), ("eval", 6), ("checkpoint", 6)]


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0.0, "0"), (999.4, "999"), (999.5, "1k"), (43812.5, "43.8k"), (999_950.0, "1M"),
     (2.5e9, "2.5G"), (1e12, "1e+12"), (float("inf"), "inf"), (-5e4, "-50k")],
)  # fmt: skip
def test_rates_read_in_three_figures(value: float, shown: str) -> None:
    assert _si(value) == shown


def test_the_progress_bar_ends_where_the_run_stops(tmp_path: Path) -> None:
    """``training.stop_after`` from a config, not only --max-steps, sets the bar's total; a
    resumed bar starts at the resumed step."""
    bars: list[RichProgressSink] = []
    begun: list[int] = []

    class Recorded(RichProgressSink):
        def begin_at(self, step: int) -> None:
            begun.append(step)
            super().begin_at(step)

    def recorded(total: int) -> RichProgressSink:
        bars.append(Recorded(total, console=Console(file=io.StringIO())))
        return bars[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_api, "RichProgressSink", recorded)
        overrides = ["training.stop_after=6", "model.hidden=[16]", "eval.every_steps=null"]
        train("digits-classifier", overrides=overrides, out_dir=tmp_path, progress=True)
        overrides[0] = "training.stop_after=9"
        train("digits-classifier", overrides=overrides, out_dir=tmp_path, progress=True,
              resume="latest")  # fmt: skip
    assert [bar.progress.tasks[0].total for bar in bars] == [6, 9]
    assert [bar.progress.tasks[0].completed for bar in bars] == [6, 9] and begun == [6]


def test_a_save_from_an_eval_sink_is_left_out_once(tmp_path: Path) -> None:
    """A sink saving on the ``eval`` event nests one excluded span in another: it must be
    left out of the next step event's time once, not twice (which made it negative)."""
    config = small_config(
        tmp_path, "training.max_steps=40", "training.log_every=10", "eval.every_steps=20"
    )
    steps: dict[int, float] = {}
    trainer = None

    class Sink:
        def emit(self, event: TrainingEvent) -> None:
            if event.kind == "step":
                steps[event.step] = event.metrics["step_time_s"]
            elif event.kind == "eval" and trainer is not None:
                trainer.save()

    trainer = build_trainer(config, sinks=[Sink()])
    assert trainer.checkpoints is not None
    save = trainer.checkpoints.save

    def slow_save(*args: Any, **kwargs: Any) -> Path:
        time.sleep(0.3)
        return save(*args, **kwargs)

    trainer.checkpoints.save = slow_save  # type: ignore[method-assign]
    trainer.fit()
    assert sorted(steps) == [10, 20, 30, 40] and all(0 < t < 0.02 for t in steps.values()), steps


def test_a_slow_sink_is_not_step_time(tmp_path: Path) -> None:
    """0.1 s in every sink call, on step and epoch-end events too: none of it is training."""

    class Slow:
        def __init__(self) -> None:
            self.steps: list[dict[str, float]] = []

        def emit(self, event: TrainingEvent) -> None:
            time.sleep(0.1)
            if event.kind == "step":
                self.steps.append(event.metrics)

    slow = Slow()  # 22 batches per epoch: an epoch ends inside the interval ending at step 25
    build_trainer(small_config(tmp_path, "training.log_every=5"), sinks=[slow]).fit()
    times = [m["step_time_s"] for m in slow.steps]
    assert len(times) == 6 and all(t < 0.01 for t in times), times


def test_on_80_columns_the_stats_give_way_to_the_step_count() -> None:
    """A pipe or a CI log is 80 columns wide: the count and the time left must still show."""
    out = io.StringIO()
    sink = RichProgressSink(total_steps=400, console=Console(file=out, width=80))
    many = {"loss": 0.9421, "lr": 0.002957, "samples_per_s": 43812.5, "tokens_per_s": 2.001e5,
            "data_wait_fraction": 0.1154}  # fmt: skip
    sink.emit(TrainingEvent(kind="step", step=50, epoch=0, metrics=many))
    sink.emit(TrainingEvent(kind="end", step=400, epoch=0))
    line = out.getvalue().splitlines()[-1]
    assert len(line) <= 80 and "50/400" in line and "loss 0.9421" in line
    assert line.rstrip().endswith("…")  # the rest of the stats, cut short


def test_every_epoch_a_step_ends_is_marked_and_evaluated_once(tmp_path: Path) -> None:
    """2 batches an epoch and 3 micro-batches a step: some steps end two epochs, and each
    gets its epoch_end event; evaluation every 2 epochs runs once at such a step."""
    sink = ListSink()
    config = small_config(tmp_path, "loader.batch_size=700", "training.grad_accum=3",
                          "eval.every_epochs=2", "training.max_steps=8",
                          "schedule.warmup_steps=0")  # fmt: skip
    build_trainer(config, sinks=[sink]).fit()
    ended = [(e.step, e.epoch) for e in sink.events if e.kind == "epoch_end"]
    assert [epoch for _, epoch in ended] == list(range(12))
    assert [step for step, _ in ended] == [1, 2, 2, 3, 4, 4, 5, 6, 6, 7, 8, 8]
    assert [e.step for e in sink.events if e.kind == "eval"] == [2, 3, 4, 6, 7, 8]


def test_the_last_steps_events_come_in_the_usual_order(tmp_path: Path) -> None:
    """Step 30 is not a multiple of log_every: its step event still precedes its evaluation."""
    sink = ListSink()
    config = small_config(tmp_path, "training.log_every=20", "eval.every_steps=15")
    build_trainer(config, sinks=[sink]).fit()
    at_end = [e.kind for e in sink.events if e.step == 30]
    assert at_end == ["step", "eval", "checkpoint", "end"]


def test_a_sink_without_emit_is_refused_before_training(tmp_path: Path) -> None:
    class Callbacks:  # meant for CallbackSink, given as a sink
        def on_step_end(self, event: TrainingEvent) -> None: ...

    with pytest.raises(
        TypeError, match=r"sinks\[1\]: a Callbacks has no emit\(event\) method: wrap"
    ):
        train(small_config(tmp_path / "run"), sinks=[ListSink(), Callbacks()], max_steps=10)
    assert not (tmp_path / "run" / "checkpoints").exists()  # no step was taken

    class Typo:
        def on_step(self, event: TrainingEvent) -> None: ...  # never called

    with pytest.raises(TypeError, match="CallbackSink: a Typo defines none of on_step_end"):
        CallbackSink(Typo())
