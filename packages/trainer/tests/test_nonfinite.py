"""Non-finite losses: stopped with the step and batch named, or skipped, as configured."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch

from torchsmith.interfaces import ConfigError, TrainingEvent
from torchsmith.trainer import (
    ClassificationTask,
    JsonlSink,
    NonFiniteLossError,
    Stepper,
    build_trainer,
)
from torchsmith.trainer._distributed import Dist

from .conftest import poison_step, small_config


@pytest.mark.parametrize("accum", [1, 2])
@pytest.mark.parametrize(("policy", "check"), [("error", "step"), ("error", "window"),
                                               ("skip", "step")])  # fmt: skip
def test_nonfinite_loss(tmp_path: Path, policy: str, check: str, accum: int) -> None:
    overrides = (
        f"training.nonfinite={policy}",
        f"training.grad_accum={accum}",
        f"training.nonfinite_check={check}",
        "checkpoint.every_steps=5",  # a due save after the bad step: it must not happen
    )
    trainer = build_trainer(small_config(tmp_path, *overrides))
    trainer.save()  # a last good checkpoint
    good = (tmp_path / "checkpoints" / "latest" / "model.safetensors").read_bytes()
    poison_step(trainer, 3)
    if policy == "error":
        batch = 3 * accum  # the first micro-batch of step 4
        with pytest.raises(NonFiniteLossError, match=f"loss is nan at step 4, batch {batch} of"):
            trainer.fit()
        assert (tmp_path / "checkpoints" / "latest" / "model.safetensors").read_bytes() == good
        assert not (tmp_path / "checkpoints" / "step-00000005").exists()
        # 'window' finds it at the loop's next pause (the save due at step 5), not before.
        assert trainer.step == (5 if check == "window" else 3)
        if accum == 1 and check == "step":  # the failed step's batch is not counted as used
            assert (trainer.data.epoch, trainer.data.batches_done) == (0, 3)
    else:
        before = [p.clone() for p in trainer.stepper.model.parameters()]
        metrics = trainer.fit()
        assert metrics["step"] == 30 and metrics["skipped_steps"] == 1
        assert all(torch.isfinite(p).all() for p in trainer.stepper.model.parameters())
        assert any(
            not torch.equal(a, b)
            for a, b in zip(before, trainer.stepper.model.parameters(), strict=True)
        )


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_a_window_steps_the_schedule_and_counts_steps_around_a_bad_loss(policy: str) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    batches = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(5)]
    batches[2] = (batches[2][0] * float("nan"), batches[2][1])  # step 2's loss is NaN
    stepper = Stepper(model, ClassificationTask(), opt, nonfinite=policy)
    if policy == "error":
        with pytest.raises(NonFiniteLossError, match="at step 3, batch 12 of the epoch"):
            stepper.window(batches, step=0, first_batch=10, scheduler=schedule)
        assert stepper.steps_done == 2 and schedule.last_epoch == 2
    else:
        stepper.window(batches, step=0, first_batch=10, scheduler=schedule)
        # The skipped step still counts and moves the schedule on, as a taken one does.
        assert stepper.steps_done == 5 and schedule.last_epoch == 5 and stepper.skipped == 1
        assert all(torch.isfinite(p).all() for p in model.parameters())


def test_nonfinite_batch_index_across_an_epoch_end(tmp_path: Path) -> None:
    # 22 batches per epoch in windows of 3: step 8 takes batch 21, then batches 0 and 1.
    trainer = build_trainer(small_config(tmp_path, "training.grad_accum=3"))
    task, calls = trainer.stepper.task, []

    def poisoned(model: torch.nn.Module, batch: tuple) -> object:
        out = task(model, batch)
        calls.append(trainer.step)
        if trainer.step == 7 and calls.count(7) == 2:
            out.loss = out.loss * float("nan")
        return out

    trainer.stepper.task = poisoned
    with pytest.raises(NonFiniteLossError, match="at step 8, batch 0 of the epoch"):
        trainer.fit()


def test_a_log_of_skipped_steps_only_reads_back(tmp_path: Path) -> None:
    """An interval whose steps were all skipped has no mean loss: NaN, which the JSONL log
    must still hold as a line TrainingEvent.read takes."""
    config = small_config(tmp_path, "training.nonfinite=skip", "training.log_every=1",
                          "training.max_steps=6")  # fmt: skip
    with JsonlSink(tmp_path / "log.jsonl") as sink:
        trainer = build_trainer(config, sinks=[sink])
        poison_step(trainer, 2)
        trainer.fit()
    events = [
        TrainingEvent.read(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()
    ]
    losses = {e.step: e.metrics["loss"] for e in events if e.kind == "step"}
    assert math.isnan(losses[3]) and all(math.isfinite(losses[s]) for s in (1, 2, 4, 5, 6))


def test_a_window_check_cannot_skip(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"training\.nonfinite_check: 'window' cannot skip"):
        small_config(tmp_path, "training.nonfinite=skip", "training.nonfinite_check=window")


@pytest.mark.parametrize("accum", [1, 2])
def test_skipping_the_first_step_moves_the_schedule_without_a_warning(
    tmp_path: Path, accum: int
) -> None:
    """A skipped step still counts: the schedule steps past it. Before the optimizer's first
    step torch warns that the scheduler stepped first, as if called in the wrong order."""
    config = small_config(tmp_path, "training.nonfinite=skip", f"training.grad_accum={accum}",
                          "training.max_steps=4")  # fmt: skip
    trainer = build_trainer(config)
    poison_step(trainer, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = trainer.fit()
    assert metrics["skipped_steps"] == 1 and trainer.scheduler is not None
    assert trainer.scheduler.last_epoch == 4


@pytest.mark.parametrize(
    ("nan_here", "message"),
    [(None, "at step 2, batch 1 of the epoch on rank 1"),
     (1, "at step 2, batch 1 of the epoch on rank 0"),
     (2, "at step 2, batch 1 of the epoch on rank 1")],
)  # fmt: skip
def test_under_ddp_a_deferred_nan_stops_every_rank_at_the_pause(
    monkeypatch: pytest.MonkeyPatch, nan_here: int | None, message: str
) -> None:
    """Deferred under DDP too (no host sync a step): at the pause one all-reduce marks the
    micro-batches found bad on any rank, and every rank raises for the first of them,
    naming its batch and the rank that saw it. Rank 0 of 2 here; the collectives add rank
    1's view: its losses of steps 2 and 3 (batches 1 and 2) were NaN. (Two real ranks:
    test_distributed.py.)"""
    rank1_bad = torch.tensor([0.0, 1.0, 1.0])

    def all_reduce(value: torch.Tensor, info: Dist) -> torch.Tensor:
        if value.numel() == len(rank1_bad):  # check_pending's marks, one a micro-batch
            return value.add_(rank1_bad)
        return value.mul_(2)  # a step's (items, bad flag): rank 1 had as many items

    def gather(report: object, info: Dist) -> list[object]:
        return [report, (float("nan"), 1)]  # what rank 1 saw at the first bad micro-batch

    monkeypatch.setattr("torchsmith.trainer._step.all_reduce_sum", all_reduce)
    monkeypatch.setattr("torchsmith.trainer._step.gather_objects", gather)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    stepper = Stepper(model, ClassificationTask(), opt, dist=Dist(0, 2), defer_nonfinite_check=True)
    for step in range(3):
        x = torch.randn(4, 2) * (float("nan") if step == nan_here else 1.0)
        stepper([(x, torch.tensor([0, 1, 0, 1]))], step, first_batch=step)  # nothing read yet
    with pytest.raises(NonFiniteLossError, match=f"loss is nan {message}"):
        stepper.check_pending()
