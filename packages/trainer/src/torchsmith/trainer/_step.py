"""One optimizer step over an accumulation window of micro-batches.

Accumulation weights micro-batch i by ``n_i / N`` where ``N`` is the number of
items (examples, or tokens) in the whole window, over every rank: each
backward gets ``loss_i * n_i / m`` and the summed gradient is scaled by
``m / N`` once, before clipping. N micro-batches therefore give the gradient
of one batch of N items: averaging per-micro-batch means instead (the bug
fixed in transformers PR #34191) overweights short micro-batches. ``m`` is the
nominal item count of a micro-batch, the same on every rank: it keeps each
backward's gradients the size of one mean loss's, so fp16 ones do not overflow
(``loss_i * n_i`` with 2048 tokens would be 2^11 times larger).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from torchsmith.interfaces import TaskOutput, TorchsmithError

from ._data import move_to
from ._distributed import Dist, all_reduce_sum, gather_objects
from ._grads import clear_grads
from ._tasks import TaskFn

Count = float | torch.Tensor  # items or a loss's weight: a number, or counted on the device


class NonFiniteLossError(TorchsmithError, FloatingPointError):
    """A loss was NaN or Inf; the message names the step and the batch."""


def step_past_skip(scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """``scheduler.step()`` after a skipped step: the schedule counts steps, taken or skipped.

    If no optimizer step has been taken yet in this process, torch warns that the scheduler
    stepped before the optimizer, as if the calls were in the wrong order; they are not, so
    that one warning is silenced here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        scheduler.step()


@dataclass
class Stepper:
    """Optimizer steps: forward, backward, clip, step (and the scheduler's step, when given
    one), for one step or a window of them; knows precision, accumulation, DDP and what to
    do with a NaN/Inf loss, nothing of logging, evaluation or saving.

    What a step leaves behind is kept here, not returned, so a step allocates nothing
    the loop does not read: ``last_loss`` (the last step's mean loss, read once at the
    end), ``skipped`` (steps skipped for a non-finite loss) and, only when ``track``
    is set, each step's loss and item count, which :meth:`pop_tracked` reduces for a logger
    (one stack per log, no tensor arithmetic per step).
    """

    model: nn.Module
    task: TaskFn  # (model, batch) -> TaskOutput: a built-in task or a function
    optimizer: torch.optim.Optimizer
    # Where batches go and autocast runs; None: the device of the model's parameters.
    device: torch.device | str | None = None
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16: autocast; fp16: and a scaler
    clip_grad_norm: float | None = None
    nonfinite: Literal["error", "skip"] = "error"  # a NaN/Inf loss raises, or skips the step
    dist: Dist = field(default_factory=Dist)
    track: bool = False
    scaler: torch.amp.GradScaler | None = None
    batches_per_epoch: int | None = None  # only to name a bad batch's place in its epoch
    # Reading a loss on CUDA waits for the GPU. With nonfinite="error" the check can wait
    # for the loop's next pause instead: then the loop must call check_pending() before it
    # logs, evaluates or saves (the Trainer does), on every rank, or a NaN goes unreported.
    # None defers on CUDA, where it saves a host sync per micro-batch (what a config's
    # training.nonfinite_check="auto" builds); False, the default, checks every micro-batch.
    # With nonfinite="skip" every micro-batch is checked whatever this says.
    defer_nonfinite_check: bool | None = False
    # The nominal items (examples, or tokens) of one micro-batch; the same on every rank.
    items_per_micro_batch: float = 1.0

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision: 'fp32', 'bf16' or 'fp16', not {self.precision!r}")
        if self.nonfinite not in ("error", "skip"):
            raise ValueError(f"nonfinite: 'error' or 'skip', not {self.nonfinite!r}")
        if self.device is None:
            self.device = next(self.model.parameters(), torch.empty(0)).device
        self.device = self._device = torch.device(self.device)  # "cuda" is a device too
        if self.precision == "fp16" and self.scaler is None:
            self.scaler = torch.amp.GradScaler(self._device.type)
        # Every trained tensor, the loss's own parameters included (a learnable temperature
        # sits in its own optimizer group): all are normalised and clipped together.
        self._params = [
            p for group in self.optimizer.param_groups for p in group["params"] if p.requires_grad
        ]
        in_model = {id(p) for p in self.model.parameters()}
        self._outside_ddp = [p for p in self._params if id(p) not in in_model]
        self._move = self._device.type != "cpu"
        self._ddp = self.dist.enabled
        # Context managers are built once and re-entered each micro-batch.
        self._autocast = self.autocast()
        self._amp = None if self.precision == "fp32" else self._autocast  # None: no `with`
        defer = self.defer_nonfinite_check
        if defer is None:
            defer = self._device.type == "cuda"
        # Skipping must decide before the step, so it checks now. Under DDP the ranks decide
        # together either way (a rank raising alone would leave the others waiting in a
        # collective): in the step's all-reduce, or in check_pending's.
        self._defer = defer and self.nonfinite == "error"
        self._pending: list[tuple[torch.Tensor, int, int]] = []  # (loss, step, batch index)
        # The last step's (loss, weight) per micro-batch; last_loss reduces them when read.
        self._last: list[tuple[torch.Tensor, Count]] = []
        self.skipped = 0
        self.steps_done = 0  # by the last window, see window()
        # (mean loss, its weight, items) per micro-batch: the float the NaN check read, or with
        # a deferred check the detached loss it keeps; reduced once per log by pop_tracked.
        self._tracked: list[tuple[float | torch.Tensor, Count, Count]] = []
        self.restored_items = 0.0  # see load_tracked_state

    @property
    def last_loss(self) -> torch.Tensor | None:
        """The last step's loss, or None before the first: with accumulation, its micro-
        batches' mean weighted by ``TaskOutput.weight`` (worked out when read, not each step)."""
        if len(self._last) < 2:
            return self._last[0][0] if self._last else None
        losses = torch.stack([loss.detach().double() for loss, _ in self._last])
        counts = _counts([n for _, n in self._last], losses.device)
        total = counts.sum()
        return (losses * counts).sum() / torch.where(total > 0, total, 1.0)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The autocast context of ``precision`` (a no-op for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self._device.type, dtype=dtype)

    def pop_tracked(self, keep: bool = False) -> tuple[torch.Tensor | None, float, float]:
        """Since the last call (``track`` only): the weighted loss sum (float64, on the loss's
        device), the weight behind it (each micro-batch's ``TaskOutput.weight``: its items,
        or a weighted loss's total weight) and the items (read from the device if counted
        there), for a rate.

        ``keep``: leave them tracked, for a log before the interval's end (a run stopping
        between logs) whose checkpoint carries the interval on (:meth:`tracked_state`).
        """
        tracked = self._tracked
        if not keep:
            self._tracked, self.restored_items = [], 0.0
        if not tracked:
            return None, 0.0, 0.0
        values = [value for value, _, _ in tracked]
        if all(isinstance(value, torch.Tensor) for value in values):  # deferred: no sync here
            losses = torch.stack(values).double()  # type: ignore[arg-type]
        else:  # read with the NaN check (or restored by load_tracked_state)
            losses = torch.tensor(_numbers(values), dtype=torch.float64).to(self._device)
        weights = _counts([w for _, w, _ in tracked], losses.device)
        items = _counts([n for _, _, n in tracked], losses.device)
        return (losses * weights).sum(), float(weights.sum()), float(items.sum())

    def tracked_state(self) -> list[tuple[float, float, float]]:
        """Each tracked micro-batch's (mean loss, weight, items) since the last pop, as
        numbers (one sync on a GPU): what a checkpoint between logs keeps, so that the run
        resumed from it logs that interval's loss as the uninterrupted run does."""
        flat = _numbers([x for entry in self._tracked for x in entry])
        return [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]

    def load_tracked_state(self, entries: Sequence[Sequence[float]]) -> None:
        """Track ``entries`` (from :meth:`tracked_state`; an older checkpoint's (loss, items)
        pairs too) before the steps to come; their items are ``restored_items`` until the
        next pop, which a rate must leave out."""
        triples = [(e[0], e[1], e[-1]) for e in entries]  # a pair's weight is its items
        self._tracked = [(float(v), float(w), float(n)) for v, w, n in triples]
        self.restored_items = sum(float(n) for _, _, n in triples)

    def __call__(
        self,
        micro_batches: Sequence[Any],
        step: int,
        first_batch: int = 0,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ) -> None:
        """Train on ``micro_batches`` (batches ``first_batch...`` of the epoch) as the step
        after ``step`` steps (an error names it ``step + 1``, as events count steps), then
        step ``scheduler`` if given (a skipped step counts too)."""
        if len(micro_batches) == 1 and not self._ddp:
            self.window(micro_batches, step, first_batch, scheduler)
            return
        skipped = self.skipped
        self._accumulate(micro_batches, step, first_batch)
        if scheduler is not None:
            if self.skipped == skipped:
                scheduler.step()
            else:
                step_past_skip(scheduler)

    def _accumulate(self, micro_batches: Sequence[Any], step: int, first_batch: int) -> None:
        """One optimizer step over several micro-batches, or over one under DDP."""
        tracked: list[tuple[float | torch.Tensor, Count, Count]] = []
        window: list[tuple[torch.Tensor, float | torch.Tensor]] = []
        items: float | torch.Tensor = 0
        bad = None
        for index, batch in enumerate(micro_batches):
            out = self._forward(batch)
            value: float | torch.Tensor
            if self._defer:
                value = out.loss.detach()
                self._pending.append((value, step, first_batch + index))
            else:
                value = out.loss.item()
                if bad is None and not math.isfinite(value):
                    bad = (value, first_batch + index)
                    if not self._ddp:
                        self._nonfinite(bad, step)
                        return
                    # Under DDP every rank must reach the all-reduce below; decide together there.
            n = out.weight  # num_items, or a weighted mean's total weight
            with self._sync_context(last=index == len(micro_batches) - 1):
                self._backward(out.loss * (n / self.items_per_micro_batch))
            items += n
            window.append((out.loss, n))
            if self.track:
                tracked.append((value, n, out.num_items))
        total, any_bad = self._agree(items, bad is not None)
        if any_bad:  # here or on another rank (then this rank has no batch of its own to name)
            self._nonfinite(bad, step)
            return
        self._scale_gradients(total)
        self._clip_and_step()
        self._last = window
        self._tracked += tracked

    def window(
        self,
        batches: Iterable[Any],
        step: int,
        first_batch: int = 0,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ) -> None:
        """Steps ``step...``, one per batch of ``batches`` (batches ``first_batch...`` of the
        epoch), on one process without accumulation: a hand-written loop plus a finiteness
        check, and ``scheduler.step()`` after each step when one is given.

        The loop runs here, not one call per step, because on a 0.5 ms step each call and
        attribute (or global) read shows. ``steps_done`` counts the steps taken or skipped,
        also when a step raises, so the caller's step count stays exact.
        """
        task, model, optimizer, pending = self.task, self.model, self.optimizer, self._pending
        autocast, move, defer, track = self._amp, self._move, self._defer, self.track
        plain, isfinite = self.scaler is None and self.clip_grad_norm is None, math.isfinite
        done, loss = 0, None
        try:
            for batch in batches:
                if move:
                    batch = move_to(batch, self._device, non_blocking=True)
                if autocast is None:
                    out: TaskOutput = task(model, batch)
                else:
                    with autocast:
                        out = task(model, batch)
                loss = out.loss
                value: float | torch.Tensor
                if defer:
                    value = loss.detach()
                    pending.append((value, step + done, first_batch + done))
                    finite = True  # for now: check_pending decides at the next pause
                else:  # .item() syncs on CUDA; on CPU it costs ~0.5 us, bool(isfinite()) ~4
                    value = loss.item()
                    finite = isfinite(value)
                if finite:
                    if plain:  # no scaler, no clipping: the hand-written lines
                        loss.backward()  # type: ignore[no-untyped-call]
                        optimizer.step()
                        clear_grads(optimizer)
                    else:
                        self._backward(loss)
                        self._clip_and_step()
                    if track:
                        self._tracked.append((value, out.weight, out.num_items))
                else:  # raises with nonfinite="error"; skips the step with "skip"
                    self._nonfinite((float(value), first_batch + done), step + done)
                if scheduler is not None:
                    if finite:
                        scheduler.step()
                    else:
                        step_past_skip(scheduler)
                done += 1
        finally:
            self.steps_done = done
        if loss is not None:
            self._last = [(loss, 1)]

    def check_pending(self) -> None:
        """Raise for the first non-finite loss among the deferred ones (one host sync).

        The loop calls this before it logs, evaluates or saves, so a checkpoint is never
        written after a bad step; the steps since then are lost with the run anyway. Under
        DDP every rank calls it at the same pause, holding losses of the same steps: one
        all-reduce marks the micro-batches bad on any rank, and every rank raises for the
        first (the rank that saw it names its batch).
        """
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        values = torch.stack([loss.float() for loss, _, _ in pending])
        bad_here = ~torch.isfinite(values)
        bad = all_reduce_sum(bad_here.double(), self.dist) > 0 if self._ddp else bad_here
        where = bad.nonzero()
        if len(where):
            first = int(where[0, 0])
            _, step, index = pending[first]
            self._nonfinite((float(values[first]), index) if bad_here[first] else None, step)

    def _forward(self, batch: Any) -> TaskOutput:
        if self._move:
            batch = move_to(batch, self._device, non_blocking=True)
        with self._autocast:
            out: TaskOutput = self.task(self.model, batch)
        return out

    def _sync_context(self, last: bool) -> contextlib.AbstractContextManager[Any]:
        # DDP all-reduces gradients only on the window's last backward.
        if self._ddp and not last:
            return self.model.no_sync()  # type: ignore[operator, no-any-return]
        return contextlib.nullcontext()

    def _backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
        else:
            loss.backward()  # type: ignore[no-untyped-call]

    def _agree(
        self, local_items: float | torch.Tensor, local_bad: bool
    ) -> tuple[float | torch.Tensor, bool]:
        """(N, the items of the window over every rank; whether any rank saw a bad loss).
        Under DDP one collective carries both, so the ranks decide together."""
        if not self._ddp:
            return local_items, local_bad
        packed = torch.zeros(2, dtype=torch.float64, device=self._device)
        # fill_ takes a number as a kernel argument; `packed[0] = n` would copy it from the
        # host, a sync on CUDA. A count made on the device (a 0-dim tensor) stays there.
        packed[0].fill_(local_items)
        packed[1].fill_(float(local_bad))
        all_reduce_sum(packed, self.dist)
        if self._defer:  # no flag to read (a host sync): check_pending decides, all together
            return packed[0], False
        return packed[0], bool(packed[1])

    def _scale_gradients(self, total: float | torch.Tensor) -> None:
        """Scale the summed gradients by world_size * m / N: each backward carried
        ``loss_i * n_i / m``. N counted on the device (a tensor) stays there: no sync."""
        if self._ddp and self._outside_ddp:
            self._average_outside_ddp()
        # A window of no items (every target ignored, with a loss that gives 0 for that, as
        # torchsmith-losses' cross-entropy does) has zero gradients, as one empty batch
        # would: dividing by N = 0 would turn them into NaN weights.
        if isinstance(total, torch.Tensor):  # as a Python number would divide
            total = torch.where(total > 0, total.double(), 1.0)
        elif total <= 0:
            total = 1
        # DDP averaged the per-rank sums over world_size; undo that, and turn n_i / m into n_i / N.
        scale = self.dist.world_size * self.items_per_micro_batch / total
        grads = [p.grad for p in self._params if p.grad is not None]
        if grads:  # with a tensor scale, _foreach_mul_ refuses an empty list
            torch._foreach_mul_(grads, scale)

    def _average_outside_ddp(self) -> None:
        """Average over ranks, as DDP does for the model, the gradients of parameters DDP
        does not hold (a loss's learnable temperature): one collective for all of them."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._outside_ddp]
        flat = torch.cat([g.reshape(-1) for g in grads])
        all_reduce_sum(flat, self.dist).div_(self.dist.world_size)
        parts = torch.split(flat, [g.numel() for g in grads])
        for p, part in zip(self._outside_ddp, parts, strict=True):
            p.grad = part.view_as(p).clone()

    def _clip_and_step(self) -> None:
        if self.scaler is not None:
            if self.clip_grad_norm is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self._params, self.clip_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if self.clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(self._params, self.clip_grad_norm)
            self.optimizer.step()
        clear_grads(self.optimizer)

    def _nonfinite(self, bad: tuple[float, int] | None, step: int) -> None:
        """Skip the step, or raise naming it, the batch, and under DDP the rank that saw it.

        ``bad`` is (the loss, the batch's index), or None on a rank whose own losses were
        finite: under DDP every rank calls this together once any has seen a bad loss.
        """
        if self.nonfinite == "skip":
            clear_grads(self.optimizer)
            self.skipped += 1
            return
        on_rank = ""
        if self._ddp:  # one collective, on a run's last step: every rank names the same batch
            seen = gather_objects(bad, self.dist)
            rank = next(r for r, report in enumerate(seen) if report is not None)
            bad, on_rank = seen[rank], f" on rank {rank}"
        assert bad is not None  # one process: only called with its own bad loss
        value, index = bad
        if self.batches_per_epoch:
            index %= self.batches_per_epoch  # an accumulation window may cross an epoch's end
        raise NonFiniteLossError(
            f"loss is {value} at step {step + 1}, batch {index} of the epoch{on_rank} "
            "(training.nonfinite='skip', or Stepper(nonfinite='skip'), skips such steps)"
        )


def _counts(items: Sequence[float | torch.Tensor], device: torch.device) -> torch.Tensor:
    """Item counts (ints, or counts made on the device) as one float64 tensor on ``device``."""
    f64 = torch.float64
    return torch.stack([torch.as_tensor(n, dtype=f64, device=device) for n in items])


def _numbers(values: Sequence[float | int | torch.Tensor]) -> list[float]:
    """``values`` as floats, the tensors among them read in one go (one sync on a GPU)."""
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    read = iter(torch.stack([t.to(torch.float64) for t in tensors]).tolist() if tensors else [])
    return [next(read) if isinstance(v, torch.Tensor) else float(v) for v in values]
