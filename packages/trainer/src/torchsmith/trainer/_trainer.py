"""The coordinator: one readable loop over focused parts.

    data (BatchStream) -> Stepper (forward/backward/step) -> scheduler
                       -> events (only when a sink listens) -> evaluation -> checkpoints

Everything the loop does per step that is not training (timing aside) is
behind an ``if`` that is false unless something consumes it.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from torchsmith.interfaces import (
    CheckpointError,
    DataError,
    EventSink,
    TorchsmithError,
    TrainingEvent,
)

from ._checkpoint import STATE_FILE, CheckpointManager, load_checkpoint, load_model_state
from ._data import BatchStream
from ._distributed import Dist, all_reduce_sum, barrier, for_evaluation, gather_objects, unwrap
from ._evaluate import EarlyStopping, Evaluation
from ._events import EventBus
from ._restore import RESTORE_ERRORS, check_same_kinds, load_optimizer_state
from ._rng import rng_state, set_rng_state
from ._step import Stepper

_END = object()  # the end of a window's batches
EventKind = Literal["step", "eval", "checkpoint", "epoch_end", "end", "error"]


@dataclass
class Schedule:
    """When the loop stops, logs, evaluates and saves (in optimizer steps)."""

    max_steps: int
    stop_after: int | None = None
    grad_accum: int = 1
    log_every: int = 10
    eval_every: int | None = None
    checkpoint_every: int | None = None
    eval_every_epochs: int | None = None

    @property
    def last_step(self) -> int:
        """Where this run stops: ``stop_after`` (``--max-steps``) if it comes before the
        end of the plan, ``max_steps``, which also sets the LR schedule's length."""
        return min(self.max_steps, self.stop_after or self.max_steps)


@dataclass
class Trainer:
    """Runs :meth:`fit`: the loop below, composed of parts each usable alone."""

    stepper: Stepper
    data: BatchStream
    schedule: Schedule
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    evaluation: Evaluation | None = None
    checkpoints: CheckpointManager | None = None
    sinks: Iterable[EventSink] = ()
    early_stopping: EarlyStopping | None = None
    items_name: Literal["samples", "tokens"] = "samples"  # tokens: a step event's tokens_per_s
    samples_per_micro_batch: int = 1
    meta: dict[str, Any] = field(default_factory=dict)  # written into each checkpoint's meta
    dist: Dist = field(default_factory=Dist)
    run_id: str | None = None
    step: int = 0

    def __post_init__(self) -> None:
        self.events = EventBus(self.sinks if self.dist.is_main else ())
        # The Stepper keeps each step's loss only for a log: when a sink listens, and under
        # DDP on every rank, since each must join the reduction of the logged loss.
        self.stepper.track = bool(self.events) or self.dist.enabled
        self.metrics: dict[str, float] = {}
        self._evaluated_at = self._saved_at = self._logged_at = -1
        self._eval_keys: set[str] = set()
        self._interval_clock, self._wait = time.perf_counter(), 0.0
        self._pausing = False  # inside _not_training
        self._interval_step = self.step  # the step the current log interval began at
        self.stepper.batches_per_epoch = self.data.batches_per_epoch  # for error messages

    @property
    def skipped_steps(self) -> int:
        """Steps skipped for a non-finite loss (``training.nonfinite='skip'``)."""
        return self.stepper.skipped

    # ------------------------------------------------------------ the loop

    def fit(self) -> dict[str, float]:
        """Train until ``schedule.last_step`` (or early stopping); the final metrics."""
        s, data = self.schedule, self.data
        last_step = s.last_step
        self.stepper.model.train()
        self._interval_clock, self._wait = time.perf_counter(), 0.0
        self._interval_step = self.step  # a resumed run's first interval is shorter
        epochs_done = data.epochs_completed
        stopped = self.early_stopping is not None and self.early_stopping.stopped
        try:
            while self.step < last_step and not stopped:
                # 1) train, and only train, until something else is due
                self._train(self._steps_until_due(last_step))
                self.stepper.check_pending()  # a deferred NaN check, before anything is saved
                # 2) then log, end the epoch, evaluate and save, as due (the last step's
                # log too: its step event comes before its evaluation, as every step's does)
                if self.stepper.track and (self.step % s.log_every == 0 or self.step == last_step):
                    self._log_step()
                ended = range(epochs_done, data.epochs_completed)
                epochs_done = data.epochs_completed
                stopped = self._periodic(ended)
            self._finish()
        except BaseException as exc:
            try:
                self._emit("error", message=f"{type(exc).__name__}: {exc}")
            except Exception as sink_error:  # the run's own error is the one to raise
                warnings.warn(f"a sink failed on the error event: {sink_error!r}", stacklevel=2)
            raise
        return self.metrics

    def _steps_until_due(self, last_step: int) -> int:
        """Optimizer steps until the next log, evaluation, checkpoint, epoch end or the end."""
        s, step = self.schedule, self.step
        per_epoch = self.data.batches_per_epoch
        batches_left = per_epoch - self.data.next_batch
        # Rounded up: with accumulation the epoch's last step may take batches of the next.
        steps_left_in_epoch = -(-batches_left // s.grad_accum)
        due = [last_step, step + steps_left_in_epoch]
        for every in (
            s.log_every if self.stepper.track else None,
            s.eval_every,
            s.checkpoint_every,
        ):
            if every:
                due.append(step - step % every + every)
        return min(due) - step

    def _train(self, steps: int) -> None:
        """``steps`` optimizer steps; between them, only the data wait is timed, when logged."""
        if self.schedule.grad_accum == 1 and not self.dist.enabled:
            self._train_window(steps)
        else:
            self._train_accumulating(steps)

    def _train_window(self, steps: int) -> None:
        """One process, no accumulation: the Stepper runs the hand-written loop itself."""
        data, stepper = self.data, self.stepper
        started = time.perf_counter()
        batches = data.take(steps)  # a window never crosses an epoch's end
        if stepper.track:  # a sink will report the data wait, starting an epoch's workers too
            self._wait += time.perf_counter() - started
            batches = self._timed(batches)
        try:
            stepper.window(batches, self.step, data.batches_done, self.scheduler)
        finally:
            done = stepper.steps_done
            data.advance(done, read_all=done == steps)
            self.step += done
        if done < steps:
            raise DataError(
                f"the training data ran out after {done} of the {steps} batches left in "
                f"epoch {data.epoch}: the loader yields fewer than the sampler's "
                f"{data.batches_per_epoch} batches per epoch"
            )

    def _timed(self, batches: Iterator[Any]) -> Iterator[Any]:
        """``batches``, adding the time spent waiting for each one to the data wait."""
        clock = time.perf_counter
        while True:
            start = clock()
            batch = next(batches, _END)
            self._wait += clock() - start
            if batch is _END:
                return
            yield batch

    def _train_accumulating(self, steps: int) -> None:
        """Accumulation windows, or DDP: a Stepper call per optimizer step."""
        data, stepper, scheduler = self.data, self.stepper, self.scheduler
        accum, clock, wait = self.schedule.grad_accum, time.perf_counter, 0.0
        try:
            for _ in range(steps):
                first = data.next_batch
                t0 = clock()
                micro_batches = [next(data) for _ in range(accum)]
                wait += clock() - t0
                stepper(micro_batches, self.step, first, scheduler)
                self.step += 1
        finally:
            self._wait += wait

    def _periodic(self, ended: range) -> bool:
        """Epoch-end events for the ``ended`` epochs, evaluation and checkpoint when due;
        True to stop early."""
        s, stop = self.schedule, False
        due = False
        for epoch in ended:  # a step of a few large micro-batches may end more than one
            self._emit("epoch_end", epoch=epoch)
            due = due or bool(s.eval_every_epochs and (epoch + 1) % s.eval_every_epochs == 0)
        if due:  # once: the model is the same after each of those epochs
            stop = self._evaluate()
        if s.eval_every and self.step % s.eval_every == 0 and self._evaluated_at != self.step:
            stop = self._evaluate() or stop
        if stop or self.step == s.last_step:
            return stop  # the run ends here: _finish measures the step, then saves it
        if s.checkpoint_every and self.step % s.checkpoint_every == 0:
            self.save()  # after evaluation, so keep-best sees this step's metrics
        return False

    def _measure_last_step(self) -> None:
        """The last step's numbers (once): the log interval ending there, its loss when
        nothing logs, and an evaluation if none was due there."""
        if self.stepper.track and self.step > self._interval_step:
            self._log_step()  # the last interval may be shorter
        last_loss = self.stepper.last_loss
        if last_loss is not None and self._logged_at != self.step:  # nothing logs
            self.metrics["train_loss"] = float(last_loss.detach())
            self._logged_at = self.step
        if self.evaluation is not None and self._evaluated_at != self.step:
            # Not a scheduled evaluation (a stop before the plan's end, or an end between
            # evaluations): it must not move early stopping, or a run resumed from here
            # would stop differently from one that never stopped.
            self._evaluate(scheduled=False)

    def _finish(self) -> None:
        self._measure_last_step()  # before the checkpoint, so that holds the numbers
        if self.checkpoints is not None and self._saved_at != self.step:  # --max-steps: always
            self.save()
        self.metrics["step"] = float(self.step)
        if self.skipped_steps:
            self.metrics["skipped_steps"] = float(self.skipped_steps)
        self._emit("end", metrics=self.metrics)

    # ------------------------------------------------------------ parts of a step

    def _emit(self, kind: EventKind, epoch: int | None = None, **fields: Any) -> None:
        if self.events:  # no sink, no event object
            epoch = self.data.epoch if epoch is None else epoch
            event = TrainingEvent(
                kind=kind, step=self.step, epoch=epoch, run_id=self.run_id, **fields
            )
            with self._not_training():  # a slow sink is not a slow step
                self.events.emit(event)

    def _log_step(self) -> None:
        now, s = time.perf_counter(), self.schedule
        elapsed, wait = now - self._interval_clock, self._wait
        self._interval_clock, self._wait = now, 0.0
        # Off the schedule (a stop between logs), the interval stays open: its checkpoint
        # carries it on, and the resumed run's next log covers it as one run's would. The
        # rates count only what this process trained, not the items carried in.
        restored = self.stepper.restored_items
        loss_sum, weight, items = self.stepper.pop_tracked(keep=self.step % s.log_every != 0)
        steps, self._interval_step = self.step - self._interval_step, self.step
        loss = float("nan")  # no step tracked: every one was skipped
        if loss_sum is not None and self.dist.enabled:  # every rank tracks, so all join
            counts = torch.tensor([weight, items, restored]).to(loss_sum)
            packed = torch.cat([loss_sum.float().reshape(1), counts])
            total, weight, items, restored = all_reduce_sum(packed, self.dist).tolist()
            loss = total / (weight or 1)
        elif loss_sum is not None:
            loss = float(loss_sum) / (weight or 1)
        items -= restored
        samples = steps * s.grad_accum * self.samples_per_micro_batch * self.dist.world_size
        metrics = {
            "loss": loss,
            "samples_per_s": samples / elapsed,
            "data_wait_fraction": wait / elapsed,
            "step_time_s": elapsed / steps,
        }
        if self.items_name == "tokens":
            metrics["tokens_per_s"] = items / elapsed
        if self.scheduler is not None:
            metrics["lr"] = _lr_of_last_step(self.scheduler)
        self.metrics["train_loss"] = metrics["loss"]
        self._logged_at = self.step
        self._emit("step", metrics=metrics)

    @contextlib.contextmanager
    def _not_training(self) -> Iterator[None]:
        """Keep the time inside out of the step time and rates the next step event reports
        (an evaluation just before the last step's log must not count as training)."""
        if self._pausing:  # inside another such block (a sink saving on an eval event)
            yield
            return
        started, self._pausing = time.perf_counter(), True
        try:
            yield
        finally:
            self._pausing = False
            self._interval_clock += time.perf_counter() - started

    def _evaluate(self, scheduled: bool = True) -> bool:
        """Evaluate, run hooks, emit; True when (scheduled and) early stopping says stop."""
        with self._not_training():
            return self._evaluate_now(scheduled)

    def _evaluate_now(self, scheduled: bool) -> bool:
        self._evaluated_at = self.step
        if self.evaluation is None:
            return False
        model, stepper = self.stepper.model, self.stepper
        values = self.evaluation.run(
            for_evaluation(model, self.dist),
            stepper.task,
            device=stepper.device,
            autocast=stepper.autocast(),
            dist=self.dist,
        )
        # This evaluation's numbers replace the last one's, also where it measured fewer
        # (a task that reports a metric on some evaluations only): none is carried over.
        self.metrics = {k: v for k, v in self.metrics.items() if not k.startswith("val_")}
        self.metrics.update(values)
        self._eval_keys = set(values)
        message = self.evaluation.notes(unwrap(model), self.step)
        self._emit("eval", metrics=values, message=message)
        if self.early_stopping is None or not scheduled:
            return False
        return self.early_stopping.update(values)

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs; tensors, numbers and strings only."""
        state: dict[str, Any] = {
            "model": unwrap(self.stepper.model).state_dict(),
            "optimizer": self.stepper.optimizer.state_dict(),
            "rng": gather_objects(rng_state(), self.dist),
            "data": self.data.state_dict(),
            "loop": {"step": self.step, "skipped": self.stepper.skipped},
            # Per rank: the losses since the last log, which the next log reports.
            "log_interval": {
                "log_every": self.schedule.log_every,
                "ranks": gather_objects(self.stepper.tracked_state(), self.dist),
            },
            "meta": {**self.meta, "epoch": self.data.epoch},
        }
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if self.stepper.scaler is not None:
            state["scaler"] = self.stepper.scaler.state_dict()
        if self.early_stopping is not None:
            state["early_stopping"] = self.early_stopping.state_dict()
        loss = self._loss_module()
        if loss is not None and loss.state_dict():  # a learnable temperature, a memory bank
            # Per rank, like the RNGs: under DDP each rank's memory bank holds its own batches.
            state["loss"] = gather_objects(loss.state_dict(), self.dist)
        return state

    def _loss_module(self) -> nn.Module | None:
        loss = getattr(self.stepper.task, "loss", None)
        return loss if isinstance(loss, nn.Module) else None

    def save(self) -> Path | None:
        """Write a checkpoint (rank 0 only; every rank waits for it)."""
        with self._not_training():
            return self._save_now()

    def _save_now(self) -> Path | None:
        self.stepper.check_pending()  # never save over a good checkpoint after a bad step
        self._saved_at = self.step
        path = None
        state = self.state_dict()  # on every rank: gathering RNG states is collective
        if self.checkpoints is not None and self.dist.is_main:
            path = self.checkpoints.save(state, step=self.step, metrics=self._fresh_metrics())
            self._emit("checkpoint", message=str(path))
        barrier(self.dist)
        return path

    def _fresh_metrics(self) -> dict[str, float]:
        """The metrics for a checkpoint: evaluation results and ``train_loss`` only if
        measured at this step.

        A checkpoint between evaluations (or logs) would otherwise carry the previous
        numbers as its own, and keep-best would rank it by a model it no longer is.
        """
        stale = set() if self._evaluated_at == self.step else set(self._eval_keys)
        if self._logged_at != self.step:
            stale.add("train_loss")
        return {k: v for k, v in self.metrics.items() if k not in stale}

    def load_state_dict(self, state: Mapping[str, Any], source: Path) -> None:
        """Restore what :meth:`state_dict` saved; a CheckpointError naming ``source`` for a
        state it did not write (a damaged or foreign ``state.pt``)."""
        missing = [k for k in ("model", "optimizer", "rng", "data", "loop") if k not in state]
        if missing:
            raise CheckpointError(
                f"{source / STATE_FILE} is not a training state: it lacks {', '.join(missing)}"
            )
        try:
            self._load_state_dict(state, source)
        except TorchsmithError:
            raise
        except RESTORE_ERRORS as exc:
            raise CheckpointError(
                f"cannot restore {source}, which this run did not save: {type(exc).__name__}: {exc}"
            ) from exc

    def _load_state_dict(self, state: Mapping[str, Any], source: Path) -> None:
        self.data.check_counts(state["data"], source)  # before anything is restored
        load_model_state(unwrap(self.stepper.model), state["model"], source)
        where = str(source / STATE_FILE)
        load_optimizer_state(self.stepper.optimizer, state["optimizer"], where)
        for name, part in (("scheduler", self.scheduler), ("scaler", self.stepper.scaler)):
            if part is not None and name in state:
                scheduler = name == "scheduler"  # a scaler reads every key it saved
                check_same_kinds(
                    state[name], part.state_dict(), where, name, private_optional=scheduler
                )
                part.load_state_dict(state[name])
        if self.early_stopping is not None and "early_stopping" in state:
            self.early_stopping.load_state_dict(state["early_stopping"])
        loss = self._loss_module()
        if loss is not None and loss.state_dict():
            if "loss" not in state:
                raise CheckpointError(
                    f"checkpoint {source} holds no state for the loss "
                    f"{type(loss).__name__} (its {', '.join(loss.state_dict())}), "
                    "so the run cannot resume exactly; it was saved with another task.loss"
                )
            loss.load_state_dict(self._mine(state["loss"]))
        self._restore_position(state["rng"], state["data"], source)
        self._restore_log_interval(state.get("log_interval"))
        self.step = int(state["loop"]["step"])
        self.stepper.skipped = int(state["loop"].get("skipped", 0))  # older checkpoints: 0
        self._restore_measurements(state.get("meta", {}).get("metrics", {}))

    def _mine(self, per_rank: list[Any]) -> Any:
        """This rank's entry of a per-process list; rank 0's if fewer processes wrote it."""
        return per_rank[self.dist.rank if self.dist.rank < len(per_rank) else 0]

    def _restore_position(self, rngs: list[Any], data: Mapping[str, int], source: Path) -> None:
        """The RNGs and the data position; ``rngs`` has one entry per process that saved."""
        set_rng_state(self._mine(rngs))
        position = dict(data)
        if len(rngs) != self.dist.world_size:
            warnings.warn(
                f"resuming {source}, written by {len(rngs)} process(es), with "
                f"{self.dist.world_size}: the data order and random streams are per process, "
                "so this run will not match an uninterrupted one",
                stacklevel=3,
            )  # and a global batch now holds another number of examples:
            seen = position["batches_done"] * len(rngs) // self.dist.world_size
            position["batches_done"] = min(seen, self.data.batches_per_epoch)
        self.data.load_state_dict(position)

    def _restore_log_interval(self, saved: Mapping[str, Any] | None) -> None:
        """The losses of the log interval the checkpoint fell in, when this run logs on the
        same steps with as many processes (else its first log covers the steps from here,
        as with a checkpoint written before this was saved)."""
        if saved is None or not self.stepper.track:
            return
        ranks = saved["ranks"]
        if saved["log_every"] == self.schedule.log_every and len(ranks) == self.dist.world_size:
            self.stepper.load_tracked_state(self._mine(ranks))

    def _restore_measurements(self, metrics: Mapping[str, float | None]) -> None:
        """What was measured at the checkpoint's step, which a run ending there reports."""
        saved = {k: float("nan") if v is None else float(v) for k, v in metrics.items()}
        if "train_loss" in saved:  # null: NaN, the mean of a log whose steps were all skipped
            self.metrics["train_loss"] = saved["train_loss"]
            self._logged_at = self.step
        evaluated = {k: v for k, v in saved.items() if k.startswith("val_")}
        # A resume at the run's end does not evaluate (and log) it twice; unless a value was
        # not finite (meta.json holds it as null), when evaluating again gives it back.
        if evaluated and all(math.isfinite(v) for v in evaluated.values()):
            self.metrics.update(evaluated)
            self._evaluated_at, self._eval_keys = self.step, set(evaluated)

    def resume(self, path: str | Path = "latest") -> Path:
        """Continue from a checkpoint: ``"latest"`` under our directory, or a path."""
        source = Path(path) if self.checkpoints is None else self.checkpoints.resolve(path)
        self.load_state_dict(load_checkpoint(source), source)
        if self.checkpoints is not None:
            self.checkpoints.branch_from(self.step)  # later checkpoints are another branch
            if source.resolve().parent == self.checkpoints.directory.resolve():
                self._saved_at = self.step  # saved here already (not so from another --out)
        return source


def _lr_of_last_step(scheduler: torch.optim.lr_scheduler.LRScheduler) -> float:
    """The LR the step just taken used (first group). ``get_last_lr`` is the next step's:
    the scheduler stepped after it. For a LambdaLR (what configs build) that one is
    recomputed; another scheduler's next LR is reported as it is."""
    if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR) and scheduler.last_epoch > 0:
        return float(scheduler.base_lrs[0] * scheduler.lr_lambdas[0](scheduler.last_epoch - 1))
    return float(scheduler.get_last_lr()[0])
