"""The event stream: sinks that receive TrainingEvents (a JSONL log, a progress bar, callbacks).

Any object with ``emit(event)`` is a sink (the interfaces' EventSink protocol);
the API's WebSocket subscribes the same way. The trainer builds an event only
when a sink exists to receive it.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from torchsmith.interfaces import EventSink, TrainingEvent, atomic_write

if TYPE_CHECKING:
    from rich.console import Console

_CALLBACKS = {
    "step": "on_step_end",
    "eval": "on_eval_end",
    "checkpoint": "on_checkpoint",
    "epoch_end": "on_epoch_end",
    "end": "on_train_end",
    "error": "on_error",
}


class EventBus:
    """Fans one event out to every sink; falsy when it has none.

    A sink without an ``emit(event)`` method is refused here, before training, rather than
    at the first event, which may come hours in."""

    def __init__(self, sinks: Iterable[EventSink] = ()) -> None:
        self.sinks = list(sinks)
        for index, sink in enumerate(self.sinks):
            if not callable(getattr(sink, "emit", None)):
                hint = ""
                if any(hasattr(sink, name) for name in _CALLBACKS.values()):
                    hint = ": wrap an object of on_step_end (and friends) in CallbackSink(...)"
                raise TypeError(
                    f"sinks[{index}]: a {type(sink).__name__} has no emit(event) method{hint}"
                )

    def __bool__(self) -> bool:
        return bool(self.sinks)

    def emit(self, event: TrainingEvent) -> None:
        """Give ``event`` to every sink. A sink that raises does not keep it from the ones
        after it (the JSONL log still records the step); the first error is raised after."""
        failure: Exception | None = None
        for sink in self.sinks:
            try:
                sink.emit(event)
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def close(self) -> None:
        """Close every sink that has a ``close`` method."""
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if close is not None:
                close()


class JsonlSink:
    """Appends each event as one JSON line, flushed, so a crash loses at most the last line.

    Holds the file open until :meth:`close`, or the end of a ``with JsonlSink(path) as sink:``
    block.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def emit(self, event: TrainingEvent) -> None:
        """Append ``event`` as one JSON line, flushed; fsynced at checkpoints, end and error."""
        if os.fstat(self._file.fileno()).st_nlink == 0:  # the file (or its folder) was deleted
            self._reopen()
        self._file.write(event.write() + "\n")
        self._file.flush()
        if event.kind in ("end", "error", "checkpoint"):
            os.fsync(self._file.fileno())

    def _reopen(self) -> None:
        """Start the log again where it was, rather than write on into a deleted file."""
        warnings.warn(
            f"{self.path} was deleted during the run; the events from here on start it again",
            stacklevel=3,
        )
        self._file.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        """Close the file (the run's owner does, at the end)."""
        self._file.close()

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def drop_events_after(path: Path, step: int) -> int:
    """Remove from the JSONL log at ``path`` the events after ``step``, the ``end`` or
    ``error`` event at ``step`` (the run goes on from there), and any line a kill cut short:
    a run resumed at ``step`` logs what follows again (as TensorBoard's ``purge_step``
    does), and the log reads as one run. Atomic; the number of lines removed."""
    if not path.is_file():
        return 0
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    kept = [line for line in lines if (place := _place(line)) is not None and place <= (step, 1)]
    # A last line without its newline (a kill, a full disk) would have the next event
    # appended onto it, so the file is rewritten then too.
    if len(kept) < len(lines) or (text and not text.endswith("\n")):
        atomic_write(path, "".join(line + "\n" for line in kept))
    return len(lines) - len(kept)


def _place(line: str) -> tuple[int, int] | None:
    """(step, 2 for an ``end`` or ``error`` event, else 1): where a process stopped comes
    after everything else at its step."""
    try:
        event = json.loads(line)
        return int(event["step"]), 2 if event.get("kind") in ("end", "error") else 1
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class CallbackSink:
    """Calls ``on_step_end(event)``, ``on_eval_end``, ``on_checkpoint``, ``on_epoch_end``,
    ``on_train_end`` or ``on_error`` on ``callbacks``, whichever it defines."""

    def __init__(self, callbacks: Any) -> None:
        if not any(callable(getattr(callbacks, name, None)) for name in _CALLBACKS.values()):
            raise TypeError(
                f"CallbackSink: a {type(callbacks).__name__} defines none of "
                f"{', '.join(_CALLBACKS.values())}, so it would never be called"
            )
        self.callbacks = callbacks

    def emit(self, event: TrainingEvent) -> None:
        """Call the target's method for ``event.kind`` (``on_step_end`` ...), if it has one."""
        handler: Callable[[TrainingEvent], object] | None = getattr(
            self.callbacks, _CALLBACKS[event.kind], None
        )
        if handler is not None:
            handler(event)


class ListSink:
    """Keeps every event in ``events``: the test double for a sink."""

    def __init__(self) -> None:
        self.events: list[TrainingEvent] = []

    def emit(self, event: TrainingEvent) -> None:
        """Keep ``event``."""
        self.events.append(event)


class RichProgressSink:
    """A rich progress bar over optimizer steps with loss, samples/s and tokens/s, and a
    line per evaluation; on stderr (as tqdm's), so stdout stays for what a script reads."""

    def __init__(
        self, total_steps: int, description: str = "train", console: Console | None = None
    ) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.table import Column

        # The stats take what is left of the line and are cut short (an ellipsis) there, so
        # on 80 columns (a CI log) the step count and the time left always show.
        stats = Column(ratio=1, no_wrap=True, overflow="ellipsis", min_width=8)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}", table_column=stats),
            console=console or _stderr_console(),
            expand=True,
            redirect_stdout=False,  # a print stays on stdout, not above the bar on stderr
        )
        self.task_id = self.progress.add_task(description, total=total_steps, stats="")
        self._started = False

    def begin_at(self, step: int) -> None:
        """Start the bar at ``step`` (a resumed run), so its rate counts only new steps."""
        self.progress.reset(self.task_id, completed=step)

    def emit(self, event: TrainingEvent) -> None:
        """Advance the bar on a step event, print a line per evaluation, stop at the end."""
        if not self._started:
            self.progress.start()
            self._started = True
        if event.kind == "step":
            self.progress.update(self.task_id, completed=event.step, stats=_rates(event.metrics))
        elif event.kind == "eval":
            values = [f"{k}={v:.4g}" for k, v in event.metrics.items() if k.startswith("val_")]
            self.progress.console.print(f"step {event.step}: {' '.join(values)}")
            if event.message:
                self.progress.console.print(event.message)
        elif event.kind in ("end", "error"):
            self.close()

    def close(self) -> None:
        """Stop the bar (leaving its last line)."""
        if self._started:
            self.progress.stop()
            self._started = False


def _stderr_console() -> Console:
    """A rich console on stderr that falls silent when its reader goes away (``2>&1 |
    head``), and the run goes on: rich's default ends the process with exit code 1 and
    points stdout, whose reader may still be there, at /dev/null."""
    from rich.console import Console

    console = Console(stderr=True)

    def fall_silent() -> None:
        console.quiet = True

    console.on_broken_pipe = fall_silent  # type: ignore[method-assign]
    return console


def _rates(metrics: dict[str, float]) -> str:
    """A step's numbers, short: ``loss 0.9421  lr 0.00296  43.8k samples/s  wait 12%``."""
    parts = [f"{name} {metrics[name]:.4g}" for name in ("loss", "lr") if name in metrics]
    for name, unit in (("samples_per_s", "samples/s"), ("tokens_per_s", "tokens/s")):
        if name in metrics:
            parts.append(f"{_si(metrics[name])} {unit}")
    if "data_wait_fraction" in metrics:
        parts.append(f"wait {metrics['data_wait_fraction']:.0%}")
    return "  ".join(parts)


def _si(value: float) -> str:
    """``43812.5`` as ``43.8k``: three figures and a k, M or G (what rounds up to 1000 of
    one unit is 1 of the next)."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if math.isfinite(value) and abs(value) >= 0.9995 * scale:
            text = f"{value / scale:.3g}"
            return f"{text}{suffix}" if "e" not in text else f"{value:.3g}"
    return f"{value:.3g}"
