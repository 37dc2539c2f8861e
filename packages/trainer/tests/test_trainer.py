"""The loop as a whole: events, evaluation, early stopping, non-finite losses, precision."""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path

import pytest
import torch

from torchsmith.interfaces import ConfigError, TrainingEvent
from torchsmith.trainer import (
    CallbackSink,
    ClassificationTask,
    EarlyStopping,
    ListSink,
    RichProgressSink,
    build_trainer,
    evaluate,
    train,
)

from .conftest import small_config


def test_events_flow_to_sinks_with_timing(tmp_path: Path) -> None:
    sink = ListSink()
    config = small_config(tmp_path, "eval.every_steps=10", "checkpoint.every_steps=15")
    metrics = build_trainer(config, sinks=[sink]).fit()
    kinds = [e.kind for e in sink.events]
    assert kinds.count("step") == 6 and kinds.count("eval") == 3
    assert kinds.count("checkpoint") == 2 and kinds[-1] == "end"
    # 22 batches per epoch: epoch 0 ends when step 23 fetches its batch.
    (epoch_end,) = [e for e in sink.events if e.kind == "epoch_end"]
    assert epoch_end.epoch == 0 and epoch_end.step == 22
    step = next(e for e in sink.events if e.kind == "step")
    assert step.step == 5
    assert {
        "loss",
        "lr",
        "samples_per_s",
        "data_wait_fraction",
        "step_time_s",
    } <= step.metrics.keys()
    assert 0.0 < step.metrics["data_wait_fraction"] < 1.0  # timed, on the windowed path too
    assert metrics["step"] == 30 and "val_accuracy" in metrics
    losses = [e.metrics["loss"] for e in sink.events if e.kind == "step"]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("accum", [1, 2])
@pytest.mark.parametrize("check", ["step", "window"])  # losses kept as floats, or as tensors
def test_a_logged_loss_is_the_item_weighted_mean_since_the_last_log(
    tmp_path: Path, accum: int, check: str
) -> None:
    sink = ListSink()
    overrides = (f"training.grad_accum={accum}", f"training.nonfinite_check={check}")
    config = small_config(tmp_path, *overrides, "training.max_steps=10")
    trainer = build_trainer(config, sinks=[sink])
    task, seen = trainer.stepper.task, []

    def recording(model: torch.nn.Module, batch: tuple) -> object:
        out = task(model, batch)
        if model.training:
            seen.append((float(out.loss.detach()), out.num_items))
        return out

    trainer.stepper.task = recording
    trainer.fit()
    logged = [e.metrics["loss"] for e in sink.events if e.kind == "step"]
    per_log = 5 * accum  # log_every=5 steps of `accum` micro-batches
    expected = [
        sum(v * n for v, n in chunk) / sum(n for _, n in chunk)
        for chunk in (seen[i : i + per_log] for i in range(0, len(seen), per_log))
    ]
    assert logged == pytest.approx(expected, rel=1e-6)


def test_every_schedule_lands_on_its_step_with_accumulation_across_epochs(
    tmp_path: Path,
) -> None:
    # The loop trains in windows up to the next due thing; nothing may be late or skipped.
    # 22 batches per epoch in windows of 3: epochs end at steps 8, 15, 22 and 30.
    sink = ListSink()
    config = small_config(
        tmp_path,
        "training.grad_accum=3",
        "training.log_every=4",
        "eval.every_steps=5",
        "eval.every_epochs=2",
        "checkpoint.every_steps=7",
    )
    build_trainer(config, sinks=[sink]).fit()

    def steps(kind: str) -> list[int]:
        return [e.step for e in sink.events if e.kind == kind]

    assert steps("step") == [4, 8, 12, 16, 20, 24, 28, 30]  # and the last, shorter interval
    assert steps("epoch_end") == [8, 15, 22, 30]
    assert [e.epoch for e in sink.events if e.kind == "epoch_end"] == [0, 1, 2, 3]
    assert steps("eval") == [5, 10, 15, 20, 25, 30]
    assert steps("checkpoint") == [7, 14, 21, 28, 30]


def test_no_sink_means_no_tracking(tmp_path: Path) -> None:
    trainer = build_trainer(small_config(tmp_path))
    assert trainer.stepper.track is False
    result = trainer.fit()
    assert result["step"] == 30 and result["train_loss"] > 0


def test_callbacks_and_jsonl(tmp_path: Path) -> None:
    calls: list[str] = []

    class Callbacks:
        def on_step_end(self, event: TrainingEvent) -> None:
            calls.append(f"step{event.step}")

        def on_train_end(self, event: TrainingEvent) -> None:
            calls.append("end")

    train(small_config(tmp_path), sinks=[CallbackSink(Callbacks())], max_steps=10)
    assert calls == ["step5", "step10", "end"]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    events = [TrainingEvent.read(line) for line in lines]
    assert [e.kind for e in events][-2:] == ["checkpoint", "end"]
    assert json.loads(lines[0])["schema_version"] == "1.0"


def test_max_steps_keeps_the_schedule_and_checkpoints(tmp_path: Path) -> None:
    sink = ListSink()
    train(small_config(tmp_path), sinks=[sink], max_steps=7, log_jsonl=False)
    assert (tmp_path / "checkpoints" / "step-00000007" / "model.safetensors").is_file()
    lr = next(e.metrics["lr"] for e in sink.events if e.kind == "step")
    assert lr < 3e-3  # cosine over 30 planned steps, not over 7


def test_early_stopping_stops(tmp_path: Path) -> None:
    config = small_config(
        tmp_path,
        "eval.every_steps=2",
        "eval.early_stopping_metric=val_loss",
        "eval.patience=1",
        "eval.min_delta=100",
    )
    assert build_trainer(config).fit()["step"] == 4  # never improves by 100: stop at 2nd eval


def test_an_imported_model_trains_and_its_top_k_is_checked_before_training(
    tmp_path: Path,
) -> None:
    """``model.kind = "import"``: any builder by import path. Validation cannot know its
    class count, so a top-k metric it is too small for is refused when the run is built."""
    linear = {"kind": "import", "target": "torch.nn:Linear"}
    config = small_config(
        tmp_path / "ok",
        "task.top_k=[1, 3]",
        "eval.every_steps=10",
        "eval.early_stopping_metric=val_top3_accuracy",
        "eval.mode=max",
        "eval.patience=2",  # 3 evaluations in 30 steps: patience 2 can stop the run
        model={**linear, "kwargs": {"in_features": 64, "out_features": 10}},
    )
    trainer = build_trainer(config)
    assert isinstance(trainer.stepper.model, torch.nn.Linear) and trainer.stepper.model.training
    metrics = trainer.fit()
    assert metrics["step"] == 30 and 0.0 <= metrics["val_top3_accuracy"] <= 1.0

    for field in ("eval.early_stopping_metric", "checkpoint.metric"):
        wanted = [f"{field}=val_top12_accuracy", "task.top_k=[1, 12]", "eval.every_steps=10",
                  "eval.patience=2"]  # fmt: skip
        if field == "checkpoint.metric":
            wanted += ["checkpoint.keep_best=1", "checkpoint.mode=max"]
        config = small_config(
            tmp_path / field,
            *wanted,
            model={**linear, "kwargs": {"in_features": 64, "out_features": 10}},
        )
        with pytest.raises(ConfigError, match=rf"{field}: 'val_top12_accuracy' needs more than"):
            build_trainer(config)
        assert not (tmp_path / field).exists()  # nothing trained, nothing written


def test_early_stopping_modes() -> None:
    stop = EarlyStopping("acc", patience=2, min_delta=0.01, mode="max")
    assert [stop.update({"acc": a}) for a in (0.5, 0.505, 0.6, 0.6, 0.59)] == [
        False,
        False,
        False,
        False,
        True,
    ]
    # Not measured at an evaluation (a task that reports it on some only): no improvement.
    stop = EarlyStopping("acc", patience=2, mode="max")
    with pytest.warns(UserWarning, match=r"'acc' was not measured at this evaluation"):
        assert [stop.update(m) for m in ({"acc": 0.5}, {"loss": 1.0}, {"loss": 1.0})] == [
            False,
            False,
            True,
        ]


def test_a_nan_evaluation_is_never_the_best() -> None:
    """A NaN first value used to become the best, and nothing compares better than NaN."""
    stop = EarlyStopping("loss", patience=3)
    assert [stop.update({"loss": v}) for v in (math.nan, 1.0, 0.5, 0.2, 0.1)] == [False] * 5
    assert stop.best == 0.1 and stop.bad_evals == 0
    assert [stop.update({"loss": v}) for v in (math.inf, math.nan, 0.1)] == [False, False, True]
    stop.load_state_dict({"best": math.nan, "bad_evals": 0})  # saved before this was fixed
    assert stop.best is None and not stop.update({"loss": 0.5}) and stop.best == 0.5


def test_evaluate_weights_by_items() -> None:
    model = torch.nn.Linear(2, 3)
    batches = [(torch.randn(n, 2), torch.randint(0, 3, (n,))) for n in (5, 1)]

    result = evaluate(model, ClassificationTask(top_k=(1,)), batches)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    expected = torch.nn.functional.cross_entropy(model(x), y)
    assert result["val_loss"] == pytest.approx(float(expected.detach()), rel=1e-5)
    assert model.training  # restored


@pytest.mark.parametrize("accum", [1, 2])
def test_starting_an_epochs_loader_counts_as_data_wait(
    tmp_path: Path, accum: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starting an epoch's DataLoader iterator (with workers: starting them) is waiting for
    data, on the windowed path (``take``) as on the accumulating one (``next``)."""
    sink = ListSink()
    config = small_config(tmp_path, f"training.grad_accum={accum}", "training.log_every=4",
                          "training.max_steps=4")  # fmt: skip
    trainer = build_trainer(config, sinks=[sink])
    start_epoch = trainer.data._start_epoch

    def slow_start() -> object:
        time.sleep(0.2)
        return start_epoch()

    monkeypatch.setattr(trainer.data, "_start_epoch", slow_start)
    trainer.fit()
    (step,) = [e.metrics for e in sink.events if e.kind == "step"]
    assert step["data_wait_fraction"] > 0.5  # 0.2 s of 4 steps of a few ms each


def test_evaluation_time_is_not_step_time(tmp_path: Path) -> None:
    sink = ListSink()
    config = small_config(tmp_path, "eval.every_steps=5", "training.log_every=5")
    trainer = build_trainer(config, sinks=[sink])
    trainer.evaluation.hooks.append(lambda model, step: time.sleep(0.3) or "")
    trainer.fit()
    steps = [e.metrics for e in sink.events if e.kind == "step"]
    # A step of this MLP takes about a millisecond; 0.3 s of evaluation in a 5-step window
    # would make it 60 ms if it were counted.
    assert all(m["step_time_s"] < 0.03 for m in steps), [m["step_time_s"] for m in steps]
    assert all(m["data_wait_fraction"] <= 1.0 for m in steps)


def test_final_train_loss_is_the_logged_mean(tmp_path: Path) -> None:
    sink = ListSink()
    metrics = build_trainer(small_config(tmp_path), sinks=[sink]).fit()
    last_logged = [e.metrics["loss"] for e in sink.events if e.kind == "step"][-1]
    assert metrics["train_loss"] == last_logged


def test_a_checkpoint_between_evaluations_carries_no_stale_evaluation(tmp_path: Path) -> None:
    config = small_config(
        tmp_path,
        "eval.every_steps=2",
        "checkpoint.every_steps=3",
        "checkpoint.keep_last=10",
        "training.max_steps=7",
    )
    build_trainer(config).fit()

    def meta(step: int) -> dict:
        path = tmp_path / "checkpoints" / f"step-{step:08d}" / "meta.json"
        return dict(json.loads(path.read_text())["metrics"])

    assert "val_loss" not in meta(3)  # step 2's evaluation is not step 3's model
    assert "val_loss" in meta(6) and "val_loss" in meta(7)  # evaluated at those steps


def test_a_checkpoint_between_logs_carries_no_stale_train_loss(tmp_path: Path) -> None:
    sink = ListSink()  # log_every=5: logs at 5 and 10, and the last, shorter interval at 12
    config = small_config(tmp_path, "checkpoint.every_steps=3", "checkpoint.keep_last=10",
                          "training.max_steps=12")  # fmt: skip
    build_trainer(config, sinks=[sink]).fit()
    logged = {e.step: e.metrics["loss"] for e in sink.events if e.kind == "step"}
    assert sorted(logged) == [5, 10, 12]

    def train_loss(step: int) -> float | None:
        path = tmp_path / "checkpoints" / f"step-{step:08d}" / "meta.json"
        return json.loads(path.read_text())["metrics"].get("train_loss")  # type: ignore[no-any-return]

    assert [train_loss(step) for step in (3, 6, 9)] == [None, None, None]
    assert train_loss(12) == logged[12]


@pytest.mark.parametrize("sinks", [0, 1])
def test_the_last_checkpoint_holds_the_last_steps_evaluation_and_loss(
    tmp_path: Path, sinks: int
) -> None:
    """Saved at step 12 (a multiple of checkpoint.every_steps), where no evaluation was due:
    the final evaluation and loss come first, so the checkpoint holds them."""
    config = small_config(tmp_path, "checkpoint.every_steps=4", "eval.every_steps=8",
                          "training.max_steps=12")  # fmt: skip
    metrics = build_trainer(config, sinks=[ListSink()] * sinks).fit()
    path = tmp_path / "checkpoints" / "step-00000012" / "meta.json"
    saved = json.loads(path.read_text())["metrics"]
    assert {"train_loss", "val_loss", "val_accuracy"} <= saved.keys()
    assert saved["val_loss"] == metrics["val_loss"] and saved["train_loss"] == metrics["train_loss"]


def test_the_first_log_after_a_resume_covers_only_the_steps_since(tmp_path: Path) -> None:
    """Stopped at 19 with a log every 20 steps: the log at 20 is one step's time and loss."""
    config = small_config(tmp_path, "training.log_every=20", "training.max_steps=40")
    first = config.model_copy(deep=True)
    first.training.stop_after = 19
    build_trainer(first).fit()
    sink = ListSink()
    trainer = build_trainer(config, sinks=[sink])
    trainer.resume("latest")
    trainer.fit()
    steps = {e.step: e.metrics for e in sink.events if e.kind == "step"}
    assert sorted(steps) == [20, 40]
    # Divided by 20 steps instead of 1, the first would be about 20 times shorter.
    assert steps[20]["step_time_s"] > 0.3 * steps[40]["step_time_s"]
    per_step = 64  # batch_size, no accumulation
    assert steps[20]["samples_per_s"] * steps[20]["step_time_s"] == pytest.approx(per_step)


def test_bf16_autocast_on_cpu(tmp_path: Path) -> None:
    on_cpu = "training.device=cpu"
    trainer = build_trainer(small_config(tmp_path / "bf16", on_cpu, "training.precision=bf16"))
    with trainer.stepper.autocast():
        out = trainer.stepper.model(torch.randn(2, 64))
    assert out.dtype == torch.bfloat16
    bf16 = trainer.fit()["train_loss"]
    fp32 = build_trainer(small_config(tmp_path / "fp32", on_cpu)).fit()["train_loss"]
    # Learns (from about ln 10 = 2.30; fp32 reaches about 2.07 in these 30 small steps)
    # and tracks fp32 within bf16's rounding.
    assert bf16 < 2.2 and abs(bf16 - fp32) < 0.05, (bf16, fp32)


def test_fp16_needs_cuda(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present: fp16 is allowed")
    with pytest.raises(ConfigError, match=r"training\.precision: 'fp16' needs CUDA"):
        build_trainer(small_config(tmp_path, "training.precision=fp16"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 with a GradScaler needs CUDA")
def test_fp16_with_grad_scaler_on_cuda(tmp_path: Path) -> None:
    trainer = build_trainer(
        small_config(tmp_path, "training.precision=fp16", "training.device=cuda")
    )
    assert trainer.stepper.scaler is not None
    assert trainer.fit()["step"] == 30


def test_text_sampling_hook(tmp_path: Path) -> None:
    config = small_config(
        tmp_path,
        "eval.every_steps=5",
        "eval.sample_tokens=20",
        "eval.max_batches=1",
        model={"kind": "gpt", "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16},
        data={"kind": "text", "block_size": 16},
        task={"kind": "causal_lm"},
        training={"max_steps": 5},
    )
    sink = ListSink()
    metrics = build_trainer(config, sinks=[sink]).fit()
    sample = next(e.message for e in sink.events if e.kind == "eval")
    assert sample is not None and len(sample) == 21  # prompt "\n" + 20 characters
    assert metrics["val_perplexity"] == pytest.approx(2.718281828 ** metrics["val_loss"], rel=1e-6)
    tokens = next(e for e in sink.events if e.kind == "step").metrics["tokens_per_s"]
    assert tokens > 0


def test_a_raising_sink_cancels_the_run(tmp_path: Path) -> None:
    class Cancel(Exception):
        pass

    seen: list[TrainingEvent] = []

    class Canceller:
        def emit(self, event: TrainingEvent) -> None:
            seen.append(event)
            if event.kind == "step" and event.step == 10:
                raise Cancel("stop requested")

    with pytest.raises(Cancel):
        train(small_config(tmp_path), sinks=[Canceller()], run_id="job-7", log_jsonl=False)
    assert seen[-1].kind == "error" and seen[-1].message == "Cancel: stop requested"
    assert {e.run_id for e in seen} == {"job-7"} and seen[-1].step == 10


def test_a_sink_that_always_fails_keeps_nothing_from_the_others(tmp_path: Path) -> None:
    """A broken sink (a closed socket) stops the run with its first error, and the sinks
    after it, the JSONL log among them, still record that step and the error event."""

    class Broken:
        def emit(self, event: TrainingEvent) -> None:
            raise ConnectionError(f"socket closed ({event.kind})")

    failed = pytest.warns(UserWarning, match=r"a sink failed on the error event")
    with failed, pytest.raises(ConnectionError, match=r"socket closed \(step\)") as caught:
        train(small_config(tmp_path), sinks=[Broken()])
    assert caught.value.__context__ is None  # the run's error, not the error event's
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    events = [TrainingEvent.read(line) for line in lines]
    assert [(e.kind, e.step) for e in events] == [("step", 5), ("error", 5)]
    assert events[-1].message == "ConnectionError: socket closed (step)"


def test_evaluation_every_epoch(tmp_path: Path) -> None:
    sink = ListSink()
    config = small_config(tmp_path, "eval.every_epochs=1", "training.max_steps=50")
    build_trainer(config, sinks=[sink]).fit()
    # 22 batches per epoch: epochs end at steps 22 and 44; a final evaluation at 50.
    assert [e.step for e in sink.events if e.kind == "eval"] == [22, 44, 50]
    assert [e.epoch for e in sink.events if e.kind == "epoch_end"] == [0, 1]


def batch_max_logit(model: torch.nn.Module, batch: tuple, output: object) -> float:
    return float(model(batch[0]).max())


def worst_case(model: torch.nn.Module, batch: tuple, output: object) -> float:
    return math.inf


def test_a_finished_run_resumed_reports_an_infinite_metric_as_it_was(tmp_path: Path) -> None:
    """meta.json holds a value that is not finite as null: the resume evaluates again rather
    than report null as NaN."""
    config = small_config(tmp_path, f"eval.metrics={{worst: '{__name__}:worst_case'}}",
                          "eval.every_steps=2", "training.max_steps=4")  # fmt: skip
    assert build_trainer(config).fit()["val_worst"] == math.inf
    trainer = build_trainer(config)
    trainer.resume("latest")
    assert trainer.fit()["val_worst"] == math.inf


def test_user_metric_callables_by_import_path(tmp_path: Path) -> None:
    target = f"{__name__}:batch_max_logit"
    config = small_config(tmp_path, f"eval.metrics={{peak: '{target}'}}", "training.max_steps=4")
    assert build_trainer(config).fit()["val_peak"] > 0
    bad = small_config(tmp_path, "eval.metrics={peak: 'no.such.module:fn'}")
    with pytest.raises(ConfigError, match=r"eval\.metrics\.peak: cannot import"):
        build_trainer(bad)


def test_clip_from_config(tmp_path: Path) -> None:
    config = small_config(
        tmp_path,
        model={"kind": "clip"},
        data={"kind": "digits", "captions": True},
        task={"kind": "clip"},
        training={"max_steps": 20},
    )
    metrics = build_trainer(config).fit()
    assert 0.0 <= metrics["val_retrieval_accuracy"] <= 1.0
    assert metrics["val_loss"] < 0.8 * math.log(64)  # ln(64) = 4.16 is chance for 64 pairs


def test_rich_progress_shows_rates_and_evaluations() -> None:
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200, color_system=None)
    sink = RichProgressSink(total_steps=10, console=console)
    rates = {"loss": 1.25, "samples_per_s": 3000.0, "tokens_per_s": 9e4}
    sink.emit(TrainingEvent(kind="step", step=5, epoch=0, metrics=rates))
    sink.emit(
        TrainingEvent(kind="eval", step=5, epoch=0, metrics={"val_loss": 1.5}, message="text")
    )
    sink.emit(TrainingEvent(kind="end", step=10, epoch=0))
    text = out.getvalue()
    assert "3k samples/s" in text and "90k tokens/s" in text and "loss 1.25" in text
    assert "step 5: val_loss=1.5" in text and "text" in text
    assert "5/10" in text
    assert not sink._started  # the end event stopped the live display
