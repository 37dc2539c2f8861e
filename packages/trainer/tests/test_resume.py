"""Exact resume: stop anywhere, resume, and end bit-identical to an uninterrupted run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from torchsmith.trainer import ExperimentConfig, ListSink, build_trainer
from torchsmith.trainer._distributed import unwrap

from .conftest import poison_step, small_config


def _run(config: ExperimentConfig, stop_after: int | None = None, resume: bool = False) -> dict:
    cfg = config.model_copy(deep=True)
    cfg.training.stop_after = stop_after
    trainer = build_trainer(cfg)
    if resume:
        trainer.resume("latest")
    trainer.fit()
    return {k: v.clone() for k, v in unwrap(trainer.stepper.model).state_dict().items()}


def _assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


# 22 batches of 64 per epoch, 2 per step: 5 and 27 stop mid-epoch, 11 at epoch 0's end.
@pytest.mark.parametrize("stop", [5, 11, 27])
def test_classification_resume_is_bitwise_identical(tmp_path: Path, stop: int) -> None:
    config = small_config(tmp_path / "a", "training.grad_accum=2", "eval.every_steps=4")
    reference = _run(config)
    resumed_cfg = small_config(tmp_path / "b", "training.grad_accum=2", "eval.every_steps=4")
    first = _run(resumed_cfg, stop_after=stop)
    assert not all(torch.equal(first[k], reference[k]) for k in first)  # really interrupted
    _assert_bitwise_equal(_run(resumed_cfg, resume=True), reference)


def test_contrastive_resume_restores_augmentation_rng(tmp_path: Path) -> None:
    def config(out: Path) -> ExperimentConfig:
        return small_config(
            out,
            model={"kind": "encoder", "hidden": 32, "projection": 8},
            task={"kind": "contrastive"},
            training={"max_steps": 12},
        )

    reference = _run(config(tmp_path / "a"))
    _run(config(tmp_path / "b"), stop_after=7)
    _assert_bitwise_equal(_run(config(tmp_path / "b"), resume=True), reference)


def test_resume_at_epoch_boundary_skips_no_batch(tmp_path: Path) -> None:
    reference = _run(small_config(tmp_path / "a"))
    _run(small_config(tmp_path / "b"), stop_after=22)
    _assert_bitwise_equal(_run(small_config(tmp_path / "b"), resume=True), reference)


def test_resume_with_early_stopping_stops_where_the_uninterrupted_run_stops(
    tmp_path: Path,
) -> None:
    # min_delta 100: no evaluation ever improves, so patience 2 stops at the 2nd evaluation
    # after the first (step 6). The stop at step 3 evaluates once more for the checkpoint;
    # that evaluation must not count towards patience.
    def config(out: Path) -> ExperimentConfig:
        return small_config(
            out,
            "eval.every_steps=2",
            "eval.early_stopping_metric=val_loss",
            "eval.patience=2",
            "eval.min_delta=100",
        )

    reference = build_trainer(config(tmp_path / "a"))
    reference.fit()
    assert reference.step == 6
    expected = unwrap(reference.stepper.model).state_dict()
    # Stopped before the early stop, and at it: a run resumed after its stop stays stopped.
    for stop in (3, 6):
        _run(config(tmp_path / f"b{stop}"), stop_after=stop)
        resumed = build_trainer(config(tmp_path / f"b{stop}"))
        resumed.resume("latest")
        metrics = resumed.fit()
        assert resumed.step == 6 and metrics["train_loss"] == reference.metrics["train_loss"]
        _assert_bitwise_equal(unwrap(resumed.stepper.model).state_dict(), expected)


# "window": the losses stay tensors until the log (the deferred check of a GPU run)
@pytest.mark.parametrize(("accum", "check"), [(1, "step"), (2, "step"), (1, "window")])
def test_a_resumed_run_logs_the_losses_one_run_logs(tmp_path: Path, accum: int, check: str) -> None:
    """log_every 4, stopped at 6: the stop logs steps 5-6 and its checkpoint keeps their
    losses, so the resumed run logs 5-8 at step 8 as one run does, and from a periodic
    checkpoint at 7 (as after a SIGKILL) too."""
    overrides = [
        f"training.grad_accum={accum}",
        f"training.nonfinite_check={check}",
        "training.log_every=4",
        "training.max_steps=10",
        "checkpoint.every_steps=7",
    ]

    def logged(out: Path, stop: int | None = None, resume: str | None = None) -> dict:
        config = small_config(out, *overrides)
        config.training.stop_after = stop
        sink = ListSink()
        trainer = build_trainer(config, sinks=[sink])
        if resume:
            trainer.resume(resume)
        metrics = trainer.fit()
        steps = {e.step: e.metrics["loss"] for e in sink.events if e.kind == "step"}
        return {"steps": steps, "train_loss": metrics["train_loss"]}

    one_run = logged(tmp_path / "a")
    assert list(one_run["steps"]) == [4, 8, 10]
    stopped = logged(tmp_path / "b", stop=6)
    assert list(stopped["steps"]) == [4, 6]
    resumed = logged(tmp_path / "b", resume="latest")
    assert resumed == {"steps": {8: one_run["steps"][8], 10: one_run["steps"][10]},
                       "train_loss": one_run["train_loss"]}  # fmt: skip
    logged(tmp_path / "c", stop=9)
    from_seven = logged(tmp_path / "c", resume=str(tmp_path / "c/checkpoints/step-00000007"))
    assert from_seven["steps"] == {8: one_run["steps"][8], 10: one_run["steps"][10]}


def _step_events(out: Path, *overrides: str, stop: int | None = None, resume: bool = False,
                 **sections: dict) -> dict[int, dict[str, float]]:  # fmt: skip
    config = small_config(out, *overrides, **sections)
    config.training.stop_after = stop
    sink = ListSink()
    trainer = build_trainer(config, sinks=[sink])
    if resume:
        trainer.resume("latest")
    trainer.fit()
    return {e.step: e.metrics for e in sink.events if e.kind == "step"}


def test_a_resumed_lm_counts_only_its_own_tokens_in_its_rate(tmp_path: Path) -> None:
    """The losses carried over a resume are not this process's work: tokens/s leaves their
    tokens out, so each log's tokens per sample stays the block size."""
    lm = {
        "task": {"kind": "causal_lm"},
        "model": {"kind": "gpt", "block_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 8},
        "data": {"kind": "text", "block_size": 8},
        "loader": {"batch_size": 4},
        "training": {"max_steps": 12, "log_every": 6},
    }
    _step_events(tmp_path, stop=5, **lm)
    logged = _step_events(tmp_path, resume=True, **lm)
    assert list(logged) == [6, 12]
    for metrics in logged.values():
        assert metrics["tokens_per_s"] / metrics["samples_per_s"] == pytest.approx(8.0)


def test_a_resume_that_logs_on_other_steps_starts_its_interval_there(tmp_path: Path) -> None:
    """Stopped at 6 of a log every 4 and resumed logging every 3: the steps the checkpoint
    kept (5, 6) belong to no interval of the new plan, whose log at 9 covers 7-9."""
    _step_events(tmp_path / "b", "training.log_every=4", stop=6)
    resumed = _step_events(tmp_path / "b", "training.log_every=3", resume=True)
    every_three = _step_events(tmp_path / "a", "training.log_every=3")
    assert resumed[9]["loss"] == every_three[9]["loss"]


def test_a_checkpoint_from_before_log_intervals_were_saved_resumes(tmp_path: Path) -> None:
    """Without ``log_interval`` in its state (an older version's checkpoint) a run resumes
    bitwise; its first log covers the steps from the resume."""
    reference = _run(small_config(tmp_path / "a", "training.log_every=4"))
    _run(small_config(tmp_path / "b", "training.log_every=4"), stop_after=6)
    state_file = tmp_path / "b" / "checkpoints" / "step-00000006" / "state.pt"
    state = torch.load(state_file, weights_only=True)
    del state["log_interval"]
    torch.save(state, state_file)
    logged = _step_events(tmp_path / "b", "training.log_every=4", resume=True)
    assert list(logged) == [8, 12, 16, 20, 24, 28, 30]
    _assert_bitwise_equal(_run(small_config(tmp_path / "b", "training.log_every=4"),
                               resume=True), reference)  # fmt: skip


def test_skipped_steps_are_counted_across_a_resume(tmp_path: Path) -> None:
    config = small_config(tmp_path / "a", "training.nonfinite=skip")
    straight = build_trainer(config)
    poison_step(straight, 4)
    assert straight.fit()["skipped_steps"] == 1

    first = config.model_copy(deep=True)
    first.training.stop_after, first.out_dir = 7, str(tmp_path / "b")
    stopped = build_trainer(first)
    poison_step(stopped, 4)
    stopped.fit()
    resumed = build_trainer(config.model_copy(update={"out_dir": str(tmp_path / "b")}))
    resumed.resume("latest")
    assert resumed.fit()["skipped_steps"] == 1


def test_resume_does_not_read_skipped_batches(tmp_path: Path) -> None:
    config = small_config(tmp_path)
    _run(config, stop_after=20)
    trainer = build_trainer(config)
    trainer.resume("latest")
    # The sampler starts at batch 20: only the remaining 2 batches of the epoch are listed.
    next(trainer.data)
    assert trainer.data.sampler.start_batch == 20
    assert len(trainer.data.sampler) == 2 * 64


def test_resume_with_loader_workers(tmp_path: Path) -> None:
    def config(out: Path) -> ExperimentConfig:
        return small_config(out, "loader.num_workers=2", "training.max_steps=12")

    reference = _run(config(tmp_path / "a"))
    _run(config(tmp_path / "b"), stop_after=5)
    _assert_bitwise_equal(_run(config(tmp_path / "b"), resume=True), reference)


@pytest.mark.slow
def test_compiled_model_trains_and_resumes(tmp_path: Path) -> None:
    def config(out: Path) -> ExperimentConfig:
        return small_config(out, "training.compile=true", "training.max_steps=8")

    reference = _run(config(tmp_path / "a"))
    _run(config(tmp_path / "b"), stop_after=3)
    resumed = _run(config(tmp_path / "b"), resume=True)
    for key in reference:  # compiled kernels may differ from eager in the last bits only
        torch.testing.assert_close(resumed[key], reference[key])


def test_resuming_with_another_number_of_processes_warns(tmp_path: Path) -> None:
    trainer = build_trainer(small_config(tmp_path))
    state = trainer.state_dict()
    state["rng"] = state["rng"] * 2  # as two DDP processes write it
    state["data"] |= {"epoch": 1, "batches_done": 3}  # 3 global batches of 2 x batch_size
    with pytest.warns(UserWarning, match=r"written by 2 process\(es\), with 1: .* will not match"):
        trainer.load_state_dict(state, tmp_path)
    assert (trainer.data.epoch, trainer.data.batches_done) == (1, 6)  # as many examples


def test_a_checkpoint_whose_train_loss_was_nan_resumes(tmp_path: Path) -> None:
    """Every step of a log interval skipped (nonfinite='skip'): its mean loss is NaN, which
    meta.json holds as null; a resume there reports NaN as the uninterrupted run did."""
    config = small_config(tmp_path, "training.nonfinite=skip", "checkpoint.every_steps=5")
    config.training.stop_after = 5
    first = build_trainer(config)
    for step in range(5):
        poison_step(first, step)
    assert math.isnan(first.fit()["train_loss"]) and first.skipped_steps == 5
    meta = json.loads((tmp_path / "checkpoints" / "latest" / "meta.json").read_text())
    assert meta["metrics"]["train_loss"] is None
    config.training.stop_after = 10
    resumed = build_trainer(config)
    resumed.resume("latest")
    assert math.isnan(resumed.metrics["train_loss"])
    assert math.isfinite(resumed.fit()["train_loss"])
